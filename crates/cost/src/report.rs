//! Rendering a [`Report`]: a terminal table, JSON, and a self-contained HTML page with an inline
//! SVG chart (no external scripts, styles or fonts: it must open on an offline machine).

use std::fmt::Write as _;

use rust_decimal::Decimal;

use crate::estimate::{Line, LineKind, OptionReport, Period, Report, Total, total_text};
use crate::money::{quantity, usd};
use crate::prices::Citation;
use crate::profile::Bound;

fn cite_text(id: &str, report: &Report) -> String {
    match report.citations.iter().find(|c| c.id == id) {
        Some(c) => format!("{id} ({}, {})", c.effective_from, c.confidence),
        None => id.to_string(),
    }
}

fn line_cost(l: &Line) -> String {
    match (l.kind, l.cost) {
        (LineKind::Usage, _) => "usage".into(),
        (LineKind::Charge, Some(c)) => usd(c.0),
        (LineKind::Charge, None) => "no price".into(),
    }
}

fn bound_suffix(b: Bound) -> &'static str {
    match b {
        Bound::Exact => "",
        Bound::Estimate => ", estimate",
        Bound::UpperBound => ", upper bound",
        Bound::LowerBound => ", lower bound",
    }
}

/// `≈ 1,203 requests (100 records each); at pool stripe-acme's 20/s at least 1 min`.
fn api_requests_text(api: &crate::profile::ApiRequests) -> String {
    let per = match api.records_per_request {
        Some(n) => format!("{n} records each"),
        None => "page size unknown: one record each assumed, an upper bound".into(),
    };
    let mut text = format!("≈ {} requests ({per})", quantity(Decimal::from(api.requests), 0));
    if let (Some(pool), Some(rate), Some(seconds)) = (&api.pool, &api.requests_per_second, api.seconds_at_pool_rate) {
        let minutes = seconds.div_ceil(60);
        let took = if minutes >= 120 {
            format!("{:.1} h", seconds as f64 / 3600.0)
        } else {
            format!("{minutes} min")
        };
        let _ = write!(text, "; at pool {pool}'s {rate}/s at least {took}");
    }
    if let Some(days) = api.days_by_daily_cap {
        let unit = if days == 1 { "day" } else { "days" };
        let _ = write!(text, "; its daily cap spreads them over at least {days} {unit}");
    }
    text
}

/// The report for a terminal.
pub fn to_text(report: &Report) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "backhaul cost estimate: job {}, prices as of {}",
        report.job, report.as_of
    );
    let _ = writeln!(
        w,
        "profile taken {} ({})",
        report.profile_taken_at, report.spec_fingerprint
    );
    for t in &report.tables {
        let _ = writeln!(w);
        let key = if t.primary_key.is_empty() {
            "no primary key (Fivetran keys rows by a hash of their values)".to_string()
        } else {
            format!("primary key {}", t.primary_key.join(", "))
        };
        let _ = writeln!(
            w,
            "table {}: {} rows ({}: {}), {key}",
            t.name,
            quantity(Decimal::from(t.rows.value), 0),
            t.rows.bound.as_str(),
            t.rows.basis
        );
        let _ = writeln!(
            w,
            "  bytes per row: {} zstd Parquet, {} logical, {} Airbyte JSON",
            t.parquet_bytes_per_row, t.logical_bytes_per_row, t.json_bytes_per_row
        );
        if let Some(api) = &t.api {
            let _ = writeln!(w, "  API requests: {}", api_requests_text(api));
        }
        let _ = writeln!(w, "  activity window {} from {}", t.window, t.activity_method);
        let s = &t.steady;
        let _ = writeln!(
            w,
            "  steady month: {} MAR ({}), {} records synced ({}){}",
            quantity(Decimal::from(s.mar), 0),
            s.mar_bound.as_str(),
            quantity(Decimal::from(s.records), 0),
            s.records_bound.as_str(),
            if s.mutates {
                ", rows change after insert"
            } else {
                ", append-only"
            }
        );
        let _ = writeln!(
            w,
            "  backfill month: {} billable MAR",
            quantity(Decimal::from(t.backfill_mar), 0)
        );
        for n in &t.notes {
            let _ = writeln!(w, "  - {n}");
        }
    }
    let width = report
        .options
        .iter()
        .chain(&report.storage)
        .map(|o| o.title.chars().count())
        .max()
        .unwrap_or(10)
        .max(20);
    let _ = writeln!(w);
    let _ = writeln!(
        w,
        "{:<width$}  {:>16}  {:>16}",
        "option", "backfill month", "steady month"
    );
    for o in &report.options {
        let _ = writeln!(
            w,
            "{:<width$}  {:>16}  {:>16}",
            o.title,
            total_text(&o.backfill),
            total_text(&o.steady)
        );
    }
    if !report.storage.is_empty() {
        let _ = writeln!(w, "destination storage (whichever option loads it):");
        for o in &report.storage {
            let _ = writeln!(
                w,
                "{:<width$}  {:>16}  {:>16}",
                o.title,
                total_text(&o.backfill),
                total_text(&o.steady)
            );
        }
    }
    let _ = writeln!(w, "(≥ a price is missing or a lower bound; ≤ upper bound; ~ estimate)");
    for o in report.options.iter().chain(&report.storage) {
        let _ = writeln!(w);
        let _ = writeln!(w, "{}", o.title);
        for period in Period::BOTH {
            for l in o.lines.iter().filter(|l| l.period == period) {
                let table = l.table.as_deref().unwrap_or("(all)");
                let _ = writeln!(
                    w,
                    "  {:<8} {:<10} {:>12}  {} = {} {}{}",
                    if period == Period::Backfill {
                        "backfill"
                    } else {
                        "steady"
                    },
                    table,
                    line_cost(l),
                    l.item,
                    quantity(l.quantity.0, 6),
                    l.unit,
                    bound_suffix(l.bound)
                );
                if !l.cites.is_empty() {
                    let cites: Vec<String> = l.cites.iter().map(|c| cite_text(c, report)).collect();
                    let _ = writeln!(w, "  {:<8} {:<10} {:>12}  cites {}", "", "", "", cites.join("; "));
                }
                if let Some(n) = &l.note {
                    let _ = writeln!(w, "  {:<8} {:<10} {:>12}  note: {n}", "", "", "");
                }
            }
        }
        for n in &o.notes {
            let _ = writeln!(w, "  - {n}");
        }
    }
    if !report.quotas.is_empty() {
        let _ = writeln!(w);
        let _ = writeln!(w, "quotas");
        for q in &report.quotas {
            let _ = writeln!(
                w,
                "  {} {} {}: {} of {} {} ({}%) [{}]",
                q.option,
                q.table,
                q.period.as_str(),
                quantity(q.used.0, 4),
                quantity(q.limit.0, 0),
                q.unit,
                quantity(q.percent.0, 2),
                q.cites
                    .iter()
                    .map(|c| cite_text(c, report))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let _ = writeln!(w, "    {}", q.what);
        }
    }
    let _ = writeln!(w);
    if report.unconfirmed.is_empty() {
        let _ = writeln!(w, "unconfirmed prices used: none");
    } else {
        let _ = writeln!(
            w,
            "UNCONFIRMED prices used (verify them; --strict refuses them): {}",
            report.unconfirmed.join(", ")
        );
    }
    if !report.missing.is_empty() {
        let _ = writeln!(w, "missing prices (lines left unpriced):");
        for m in &report.missing {
            let _ = writeln!(w, "  - {m}");
        }
    }
    let _ = writeln!(w, "assumptions:");
    for a in &report.assumptions {
        let _ = writeln!(w, "  - {a}");
    }
    let _ = writeln!(w);
    let _ = writeln!(w, "price rows used:");
    for c in &report.citations {
        let _ = writeln!(w, "  {}", citation_text(c));
    }
    out
}

fn citation_text(c: &Citation) -> String {
    let period = match &c.effective_to {
        Some(to) => format!("{} to {to}", c.effective_from),
        None => format!("from {}", c.effective_from),
    };
    format!(
        "{} = {} {} ({period}, {}{}) {} <{}>",
        c.id,
        c.value,
        c.unit,
        c.confidence,
        if c.overlay { ", overlay" } else { "" },
        c.source_title,
        c.source_url
    )
}

/// The report as pretty JSON.
pub fn to_json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("a report serializes")
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn to_f64(d: Decimal) -> f64 {
    d.to_string().parse().unwrap_or(0.0)
}

/// The comparison chart: one group per option (its title above two bars, one per month), drawn
/// to a linear scale.
fn chart(options: &[&OptionReport]) -> String {
    let bar_space = 560.0;
    let row = 60.0;
    let top = 30.0;
    let width = bar_space + 120.0;
    let height = top + row * options.len() as f64 + 4.0;
    let max = options
        .iter()
        .flat_map(|o| [&o.backfill, &o.steady])
        .map(|t| to_f64(t.cost.0))
        .fold(0.0_f64, f64::max)
        .max(0.01);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg id="chart" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" aria-label="Cost per option, backfill and steady month">
<defs><pattern id="hatch-backfill" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#3b6ea5"/><line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2"/></pattern><pattern id="hatch-steady" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)"><rect width="6" height="6" fill="#e3b04b"/><line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2"/></pattern></defs>
<rect class="legend backfill" x="0" y="6" width="12" height="12" fill="#3b6ea5"/><text x="16" y="16" font-size="12">backfill month</text>
<rect class="legend steady" x="120" y="6" width="12" height="12" fill="#e3b04b"/><text x="136" y="16" font-size="12">steady month</text>
<text x="250" y="16" font-size="12">hatched: a price is missing (at least)</text>
"##
    );
    for (i, o) in options.iter().enumerate() {
        let y = top + row * i as f64;
        let _ = writeln!(
            svg,
            r#"<text x="0" y="{}" font-size="12" font-weight="bold">{}</text>"#,
            y + 12.0,
            esc(&o.title)
        );
        for (j, (total, colour, class)) in [(&o.backfill, "#3b6ea5", "backfill"), (&o.steady, "#e3b04b", "steady")]
            .into_iter()
            .enumerate()
        {
            let value = to_f64(total.cost.0);
            let bar = (value / max * bar_space).max(1.0);
            let by = y + 18.0 + 18.0 * j as f64;
            let fill = if total.complete {
                colour.to_string()
            } else {
                format!("url(#hatch-{class})")
            };
            let text = total_text(total);
            let _ = writeln!(
                svg,
                r#"<rect class="bar {class}" data-option="{id}" x="0" y="{by}" width="{bar:.2}" height="15" fill="{fill}"><title>{title}: {text} ({period})</title></rect><text x="{tx:.2}" y="{ty}" font-size="11">{text}</text>"#,
                id = esc(&o.id),
                title = esc(&o.title),
                text = esc(&text),
                period = if class == "backfill" {
                    "backfill month"
                } else {
                    "steady month"
                },
                tx = bar + 4.0,
                ty = by + 12.0,
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

fn total_cell(t: &Total) -> String {
    esc(&total_text(t))
}

/// The report as one self-contained HTML page.
pub fn to_html(report: &Report) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>backhaul cost estimate: {job}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }}
td.num {{ text-align: right; white-space: nowrap; }}
.flag {{ background: #fff3cd; border: 1px solid #e0c36a; padding: 0.5em 1em; }}
.cites {{ color: #555; font-size: 12px; }}
.unconfirmed {{ color: #a33; font-weight: bold; }}
</style></head>
<body>
<h1>Cost estimate: job {job}</h1>
<p>Prices as of <b>{as_of}</b>; profile taken {taken} (<code>{fp}</code>).</p>
"#,
        job = esc(&report.job),
        as_of = esc(&report.as_of),
        taken = esc(&report.profile_taken_at),
        fp = esc(&report.spec_fingerprint)
    );
    let all: Vec<&OptionReport> = report.options.iter().collect();
    h.push_str("<h2>Options compared</h2>\n");
    h.push_str(&chart(&all));
    h.push_str("\n<table><tr><th>option</th><th>backfill month</th><th>steady month</th></tr>\n");
    for o in report.options.iter().chain(&report.storage) {
        let _ = writeln!(
            h,
            r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            esc(&o.title),
            total_cell(&o.backfill),
            total_cell(&o.steady)
        );
    }
    h.push_str("</table>\n<p class=\"cites\">≥: a price is missing or a number is a lower bound; ≤: upper bound; ~: estimate. Storage rows are the same whichever option loads the data.</p>\n");
    if !report.unconfirmed.is_empty() || !report.missing.is_empty() {
        h.push_str("<div class=\"flag\">");
        if !report.unconfirmed.is_empty() {
            let _ = write!(
                h,
                "<p class=\"unconfirmed\">Unconfirmed prices used (verify them; <code>--strict</code> refuses them): {}</p>",
                esc(&report.unconfirmed.join(", "))
            );
        }
        if !report.missing.is_empty() {
            h.push_str("<p>Missing prices (lines left unpriced):</p><ul>");
            for m in &report.missing {
                let _ = write!(h, "<li>{}</li>", esc(m));
            }
            h.push_str("</ul>");
        }
        h.push_str("</div>\n");
    }
    h.push_str("<h2>Tables</h2>\n");
    for t in &report.tables {
        let _ = writeln!(
            h,
            "<h3>{}</h3><table><tr><th>rows</th><td class=\"num\">{}</td><td>{}: {}</td></tr>\
<tr><th>primary key</th><td colspan=\"2\">{}</td></tr>\
<tr><th>bytes per row</th><td colspan=\"2\">{} zstd Parquet, {} logical, {} Airbyte JSON</td></tr>\
<tr><th>activity</th><td colspan=\"2\">{} ({})</td></tr>\
<tr><th>steady month</th><td class=\"num\">{} MAR</td><td>{}; {} records synced ({})</td></tr>\
<tr><th>backfill month</th><td class=\"num\">{} MAR</td><td>billable</td></tr></table>",
            esc(&t.name),
            quantity(Decimal::from(t.rows.value), 0),
            t.rows.bound.as_str(),
            esc(&t.rows.basis),
            if t.primary_key.is_empty() {
                "none".into()
            } else {
                esc(&t.primary_key.join(", "))
            },
            t.parquet_bytes_per_row,
            t.logical_bytes_per_row,
            t.json_bytes_per_row,
            esc(&t.window),
            esc(&t.activity_method),
            quantity(Decimal::from(t.steady.mar), 0),
            t.steady.mar_bound.as_str(),
            quantity(Decimal::from(t.steady.records), 0),
            t.steady.records_bound.as_str(),
            quantity(Decimal::from(t.backfill_mar), 0),
        );
        if !t.notes.is_empty() {
            h.push_str("<ul>");
            for n in &t.notes {
                let _ = write!(h, "<li>{}</li>", esc(n));
            }
            h.push_str("</ul>\n");
        }
    }
    h.push_str("<h2>Lines</h2>\n");
    for o in report.options.iter().chain(&report.storage) {
        let _ = writeln!(
            h,
            "<h3>{}</h3><table><tr><th>month</th><th>table</th><th>item</th><th>quantity</th><th>cost</th><th>price rows</th></tr>",
            esc(&o.title)
        );
        for l in &o.lines {
            let cites: Vec<String> = l.cites.iter().map(|c| esc(&cite_text(c, report))).collect();
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}{}</td><td class=\"num\">{} {}{}</td><td class=\"num\">{}</td><td class=\"cites\">{}</td></tr>",
                l.period.as_str(),
                esc(l.table.as_deref().unwrap_or("(all)")),
                esc(&l.item),
                l.note.as_ref().map_or(String::new(), |n| format!(
                    "<br><span class=\"cites\">{}</span>",
                    esc(n)
                )),
                quantity(l.quantity.0, 6),
                esc(&l.unit),
                esc(bound_suffix(l.bound)),
                esc(&line_cost(l)),
                cites.join("<br>")
            );
        }
        h.push_str("</table>\n");
        for n in &o.notes {
            let _ = writeln!(h, "<p class=\"cites\">{}</p>", esc(n));
        }
    }
    if !report.quotas.is_empty() {
        h.push_str("<h2>Quotas</h2><table><tr><th>option</th><th>table</th><th>month</th><th>limit</th><th>use</th><th>share</th></tr>\n");
        for q in &report.quotas {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{} of {} {}</td><td class=\"num\">{}%</td></tr>",
                esc(&q.option),
                esc(&q.table),
                q.period.as_str(),
                esc(&q.what),
                quantity(q.used.0, 4),
                quantity(q.limit.0, 0),
                esc(&q.unit),
                quantity(q.percent.0, 2)
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("<h2>Assumptions</h2><ul>");
    for a in &report.assumptions {
        let _ = write!(h, "<li>{}</li>", esc(a));
    }
    h.push_str("</ul>\n<h2>Price rows used</h2><table><tr><th>id</th><th>value</th><th>valid</th><th>confidence</th><th>source</th></tr>\n");
    for c in &report.citations {
        let _ = writeln!(
            h,
            "<tr><td><code>{}</code></td><td>{} {}</td><td>{}{}</td><td class=\"{}\">{}{}</td><td><a href=\"{}\">{}</a></td></tr>",
            esc(&c.id),
            esc(&c.value),
            esc(&c.unit),
            esc(&c.effective_from),
            c.effective_to
                .as_ref()
                .map_or(" onwards".to_string(), |t| format!(" to {}", esc(t))),
            c.confidence.as_str(),
            c.confidence.as_str(),
            if c.overlay { " (overlay)" } else { "" },
            esc(&c.source_url),
            esc(&c.source_title)
        );
    }
    h.push_str("</table>\n");
    // Marks the page once the chart has laid out, so a headless browser can tell it rendered.
    h.push_str(
        r#"<script>
(function () {
  var svg = document.getElementById('chart');
  try {
    var box = svg.getBBox();
    var bars = svg.querySelectorAll('rect.bar');
    var drawn = 0;
    for (var i = 0; i < bars.length; i++) { if (bars[i].getBBox().width > 0) { drawn++; } }
    document.body.setAttribute('data-chart', box.width > 0 && drawn === bars.length && drawn > 0 ? 'rendered' : 'empty');
    document.body.setAttribute('data-bars', String(drawn));
  } catch (e) {
    document.body.setAttribute('data-chart', 'error: ' + e.message);
  }
})();
</script>
</body></html>
"#,
    );
    h
}

#[cfg(test)]
mod tests {
    use backhaul_core::connector::RequestProfile;
    use backhaul_core::ratelimit::RatePool;

    use super::*;
    use crate::profile::ApiRequests;

    #[test]
    fn an_api_backfill_is_counted_in_requests_and_time_at_the_pools_rate() {
        let pool = RatePool {
            name: "stripe-acme".into(),
            requests_per_second: 20.0,
            burst: 10,
            daily_cap: Some(50_000),
        };
        // Five years of 2,000 customers a day, 100 a page, in 61 monthly windows.
        let profile = RequestProfile {
            records_per_request: Some(100),
            pool: Some(pool),
        };
        let api = ApiRequests::estimate(3_652_000, 61, &profile);
        assert_eq!(api.requests, 36_520 + 61);
        assert_eq!(api.seconds_at_pool_rate, Some(1_830));
        assert_eq!(api.days_by_daily_cap, Some(1));
        assert_eq!(
            api_requests_text(&api),
            "≈ 36,581 requests (100 records each); at pool stripe-acme's 20/s at least 31 min; its daily cap spreads them over at least 1 day"
        );
        // Without a page size or a pool: an upper bound, and no time.
        let bare = ApiRequests::estimate(
            500,
            2,
            &RequestProfile {
                records_per_request: None,
                pool: None,
            },
        );
        assert_eq!(bare.requests, 502);
        assert_eq!(
            api_requests_text(&bare),
            "≈ 502 requests (page size unknown: one record each assumed, an upper bound)"
        );
    }
}
