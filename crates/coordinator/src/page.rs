//! Server-rendered HTML for the status page: plain HTML and inline SVG, no scripts, no
//! external resources (clusters are often offline). The job page draws one row per chunk and
//! one bar per attempt on a shared time axis, coloured by how the attempt ended, so the shape
//! of a backfill — waves of workers, retries, stragglers, parked chunks — shows at a glance.

use std::fmt::Write;

use crate::pools::PoolSnapshot;
use crate::store::{AttemptRow, ChunkRow, ChunkState, JobRow, JobSummary};

/// Colours by attempt outcome or chunk state; the legend uses the same table.
const COLOURS: &[(&str, &str, &str)] = &[
    ("running", "#3b82f6", "running (leased)"),
    ("committed", "#16a34a", "committed"),
    ("failed", "#dc2626", "failed, retried or parked"),
    ("expired", "#f59e0b", "lease expired (worker lost)"),
    ("released", "#9ca3af", "handed back (worker drained)"),
    ("abandoned", "#a78bfa", "abandoned by a restarted local run"),
    ("cancelled", "#4b5563", "cancelled"),
    ("parked", "#7f1d1d", "chunk parked"),
    ("pending", "#e5e7eb", "chunk pending"),
];

fn colour(class: &str) -> &'static str {
    COLOURS
        .iter()
        .find(|(name, _, _)| *name == class)
        .map(|(_, c, _)| *c)
        .unwrap_or("#000000")
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
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

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5em;color:#111}\
table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}.legend span{display:inline-block;margin-right:1em}\
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}\
svg text{font-size:10px;fill:#444}";

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
<meta http-equiv=\"refresh\" content=\"5\"><style>{STYLE}</style></head><body>",
        escape(title)
    )
}

/// The job's state as the wire and `status` name it (one rule: [`crate::service::job_state`]).
fn job_state(job: &JobRow, s: &JobSummary) -> &'static str {
    crate::service::job_state(job, s).label()
}

/// A page with just an error message.
pub fn error_page(message: &str) -> String {
    format!(
        "{}<h1>backhaul</h1><p class=\"error\">{}</p><p><a href=\"/\">all jobs</a></p></body></html>",
        head("backhaul: error"),
        escape(message)
    )
}

/// `/`: every job with its counts, then the rate-limit pools.
pub fn index_page(jobs: &[(JobRow, JobSummary)], pools: &[PoolSnapshot]) -> String {
    let mut out = head("backhaul coordinator");
    out.push_str("<h1>backhaul coordinator</h1>");
    if jobs.is_empty() {
        out.push_str("<p>No jobs yet. Submit one with <code>backhaul submit job.toml --coordinator URL</code>.</p>");
    } else {
        out.push_str(
            "<table id=\"jobs\"><tr><th>job</th><th>state</th><th>range</th><th>committed</th>\
<th>running</th><th>pending</th><th>parked</th><th>rows</th></tr>",
        );
        for (job, s) in jobs {
            let _ = write!(
                out,
                "<tr data-job=\"{id}\"><td><a href=\"/jobs/{id}\">{id}</a></td><td>{state}</td><td>{range}</td>\
<td class=\"n\">{}/{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                s.committed,
                s.chunks,
                s.leased,
                s.pending,
                s.parked,
                s.committed_rows,
                id = escape(&job.job_id),
                state = job_state(job, s),
                range = escape(&job.range.display(job.cursor_kind)),
            );
        }
        out.push_str("</table>");
    }
    pools_table(&mut out, pools);
    out.push_str("<p><a href=\"/metrics\">metrics</a></p></body></html>");
    out
}

/// The checks section of `/`: one row per job with `[checks]`, failing checks marked.
pub fn checks_section(checks: &[crate::checks::JobChecks]) -> String {
    if checks.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "<h2>checks</h2><table id=\"checks\"><tr><th>job</th><th>result</th><th>freshness</th><th>volume</th></tr>",
    );
    for c in checks {
        let freshness = c.freshness.as_ref().map_or_else(|| "-".to_string(), |f| f.describe());
        let volume = c.volume.as_ref().map_or_else(|| "-".to_string(), |v| v.describe());
        let _ = write!(
            out,
            "<tr data-checks=\"{id}\"><td><a href=\"/jobs/{id}\">{id}</a></td><td class=\"{class}\">{result}</td><td>{}</td><td>{}</td></tr>",
            escape(&freshness),
            escape(&volume),
            id = escape(&c.job_id),
            class = if c.ok() { "ok" } else { "error" },
            result = if c.ok() { "pass" } else { "FAILED" },
        );
    }
    out.push_str("</table>");
    out
}

/// The rate-limit pools workers lease request tokens from (nothing when there are none).
fn pools_table(out: &mut String, pools: &[PoolSnapshot]) {
    if pools.is_empty() {
        return;
    }
    out.push_str(
        "<h2>Rate-limit pools</h2><table id=\"pools\"><tr><th>pool</th><th>rate now</th><th>configured</th>\
<th>burst</th><th>granted</th><th>waits</th><th>429s</th><th>today</th></tr>",
    );
    for p in pools {
        let cap = p.declared.daily_cap.map(|c| format!(" of {c}")).unwrap_or_default();
        let _ = write!(
            out,
            "<tr data-pool=\"{name}\"><td>{name}</td><td class=\"n\">{:.2}/s</td><td class=\"n\">{}/s</td>\
<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}{cap}</td></tr>",
            p.current_rate,
            p.declared.requests_per_second,
            p.declared.burst,
            p.tokens_granted,
            p.waits,
            p.throttled_reported,
            p.daily_used,
            name = escape(&p.declared.name),
        );
    }
    out.push_str("</table>");
}

fn outcome_class(a: &AttemptRow) -> &str {
    match a.outcome.as_deref() {
        None => "running",
        Some(o) => o,
    }
}

fn seconds(us: i64) -> String {
    let s = us as f64 / 1e6;
    if s < 120.0 {
        format!("{s:.1}s")
    } else if s < 7200.0 {
        format!("{:.1}min", s / 60.0)
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

/// `/jobs/{job}`: counts, a legend, and the timeline.
pub fn job_page(job: &JobRow, s: &JobSummary, chunks: &[ChunkRow], attempts: &[AttemptRow], now_us: i64) -> String {
    let mut out = head(&format!("backhaul: {}", job.job_id));
    let _ = write!(
        out,
        "<p><a href=\"/\">all jobs</a></p><h1>job {}</h1><p id=\"state\" data-state=\"{state}\">{state}: \
{} of {} chunks committed, {} running, {} pending, {} parked, {} cancelled; {} rows committed; range {}</p>",
        escape(&job.job_id),
        s.committed,
        s.chunks,
        s.leased,
        s.pending,
        s.parked,
        s.cancelled,
        s.committed_rows,
        escape(&job.range.display(job.cursor_kind)),
        state = job_state(job, s),
    );
    out.push_str("<p class=\"legend\">");
    for (name, c, label) in COLOURS {
        let _ = write!(
            out,
            "<span data-legend=\"{name}\"><i class=\"swatch\" style=\"background:{c}\"></i>{}</span>",
            escape(label)
        );
    }
    out.push_str("</p>");
    out.push_str(&timeline(job, chunks, attempts, now_us));
    out.push_str("</body></html>");
    out
}

/// The SVG: x is wall time from the first lease to the last event (or now), y is the chunk.
fn timeline(job: &JobRow, chunks: &[ChunkRow], attempts: &[AttemptRow], now_us: i64) -> String {
    const WIDTH: f64 = 1000.0;
    const LEFT: f64 = 60.0;
    const TOP: f64 = 20.0;
    let rows = chunks.len().max(1);
    let row_h = (600.0 / rows as f64).clamp(1.0, 14.0);
    let height = TOP + row_h * rows as f64 + 25.0;
    let start = attempts
        .iter()
        .map(|a| a.started_at_us)
        .min()
        .unwrap_or(job.created_at_us);
    let end = attempts
        .iter()
        .map(|a| a.ended_at_us.unwrap_or(now_us))
        .max()
        .unwrap_or(now_us)
        .max(start + 1_000_000);
    let span = (end - start) as f64;
    let x = |t: i64| LEFT + (t - start) as f64 / span * WIDTH;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height:.0}\" \
viewBox=\"0 0 {} {height:.0}\" role=\"img\" aria-label=\"chunk attempts over time\">",
        LEFT + WIDTH + 10.0,
        LEFT + WIDTH + 10.0
    );
    // Pending, parked and cancelled chunks get a faint full-width row so gaps are visible.
    for (i, c) in chunks.iter().enumerate() {
        let y = TOP + i as f64 * row_h;
        let class = match c.state {
            ChunkState::Parked => Some("parked"),
            ChunkState::Pending => Some("pending"),
            ChunkState::Cancelled => Some("cancelled"),
            _ => None,
        };
        if let Some(class) = class {
            let _ = write!(
                out,
                "<rect class=\"chunk {class}\" data-chunk=\"{}\" x=\"{LEFT}\" y=\"{y:.2}\" width=\"{WIDTH}\" height=\"{:.2}\" \
fill=\"{}\" opacity=\"0.35\"><title>chunk {} is {class}</title></rect>",
                c.chunk_id,
                (row_h - 0.5).max(0.5),
                colour(class),
                c.chunk_id
            );
        }
    }
    let index_of: std::collections::HashMap<u64, usize> =
        chunks.iter().enumerate().map(|(i, c)| (c.chunk_id, i)).collect();
    for a in attempts {
        let Some(&i) = index_of.get(&a.chunk_id) else { continue };
        let class = outcome_class(a);
        let end = a.ended_at_us.unwrap_or(now_us);
        let x0 = x(a.started_at_us);
        let w = (x(end) - x0).max(1.0);
        let y = TOP + i as f64 * row_h;
        let mut tip = format!(
            "chunk {} attempt {} on {}: {class}, {}",
            a.chunk_id,
            a.attempt,
            a.worker_id,
            seconds(end - a.started_at_us)
        );
        // Nothing claims more than it proved: the committing attempt says what its proof was.
        if let Some(proof) = chunks[i].committed.as_ref().filter(|_| chunks[i].attempt == a.attempt) {
            let _ = write!(tip, ", proved {}", proof.level.proves());
        }
        if let Some(m) = &a.error_message {
            let _ = write!(tip, " — {}", a.error_class.as_deref().unwrap_or(""));
            let _ = write!(tip, ": {m}");
        }
        let _ = write!(
            out,
            "<rect class=\"attempt {class}\" data-chunk=\"{}\" data-attempt=\"{}\" x=\"{x0:.2}\" y=\"{y:.2}\" \
width=\"{w:.2}\" height=\"{:.2}\" fill=\"{}\"><title>{}</title></rect>",
            a.chunk_id,
            a.attempt,
            (row_h - 0.5).max(0.5),
            colour(class),
            escape(&tip)
        );
    }
    // Axis: chunk labels at a few rows, time ticks along the bottom.
    let label_every = (12.0 / row_h).ceil().max(1.0) as usize;
    for (i, c) in chunks.iter().enumerate().step_by(label_every) {
        let _ = write!(
            out,
            "<text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT - 4.0,
            TOP + i as f64 * row_h + row_h.min(10.0),
            c.chunk_id
        );
    }
    let axis_y = TOP + row_h * rows as f64 + 14.0;
    for k in 0..=5 {
        let t = start + (span * f64::from(k) / 5.0) as i64;
        let _ = write!(
            out,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{axis_y:.1}\" text-anchor=\"middle\">+{}</text>",
            x(t),
            seconds(t - start)
        );
    }
    let _ = write!(
        out,
        "<text x=\"4\" y=\"12\">chunk</text><text x=\"{:.0}\" y=\"12\" text-anchor=\"end\">wall time since the first lease</text></svg>",
        LEFT + WIDTH
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
