//! Printing: progress bars, tables, JSON, errors.

use std::time::Duration;

use backhaul_coordinator::JobSummary;
use backhaul_core::units::ByteSize;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{Globals, OutputFormat};

/// Progress of a running job: a bar on a terminal, nothing otherwise (log lines report then).
pub struct RunProgress {
    bar: Option<ProgressBar>,
}

impl RunProgress {
    /// A bar for `job`, starting from `before`.
    pub fn new(enabled: bool, job: &str, before: &JobSummary) -> Self {
        if !enabled {
            return RunProgress { bar: None };
        }
        let bar = ProgressBar::new(before.chunks);
        let style = ProgressStyle::with_template(
            "{prefix:.bold} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} chunks  {msg}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(job.to_string());
        bar.set_position(before.committed + before.parked);
        bar.enable_steady_tick(Duration::from_millis(200));
        RunProgress { bar: Some(bar) }
    }

    /// Redraws from the latest summary.
    pub fn update(&self, now: &JobSummary, before: &JobSummary, elapsed: Duration) {
        let rows = now.committed_rows + now.in_flight_rows;
        let bytes = now.committed_bytes.saturating_sub(before.committed_bytes);
        let secs = elapsed.as_secs_f64().max(0.001);
        let rate_rows = rows.saturating_sub(before.committed_rows) as f64 / secs;
        let line = format!(
            "{} rows  {} rows/s  {:.1} MB/s Parquet",
            group(rows),
            group(rate_rows as u64),
            bytes as f64 / 1e6 / secs
        );
        match &self.bar {
            Some(bar) => {
                bar.set_length(now.chunks);
                bar.set_position(now.committed + now.parked);
                bar.set_message(line);
            }
            None => tracing::info!(
                committed = now.committed,
                chunks = now.chunks,
                parked = now.parked,
                "{line}"
            ),
        }
    }

    /// Clears the bar.
    pub fn finish(&self, now: &JobSummary, before: &JobSummary, elapsed: Duration) {
        self.update(now, before, elapsed);
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Human size.
pub fn size(bytes: u64) -> String {
    ByteSize(bytes).to_string()
}

/// Prints a JSON document on stdout.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into())
    );
}

/// Prints an error for people (stderr) or scripts (JSON on stdout), with its class.
pub fn print_error(globals: &Globals, e: &anyhow::Error) {
    let class = classify(e);
    match globals.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "error": { "message": format!("{e:#}"), "class": class.map(|c| c.as_str()) }
        })),
        OutputFormat::Text => {
            eprintln!("error: {e:#}");
        }
    }
}

/// The retry class of the first typed error in the chain.
fn classify(e: &anyhow::Error) -> Option<backhaul_core::ErrorClass> {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<backhaul_core::Error>() {
            return Some(c.class());
        }
        if let Some(c) = cause.downcast_ref::<backhaul_coordinator::CoordinatorError>() {
            return Some(c.class());
        }
        if let Some(c) = cause.downcast_ref::<backhaul_worker::WorkerError>() {
            return Some(c.class());
        }
    }
    None
}

/// `, N records in dead-letter files` after a job's rows, when there are any.
pub fn dead_letter_note(dead_letters: u64) -> String {
    if dead_letters == 0 {
        return String::new();
    }
    let records = if dead_letters == 1 { "record" } else { "records" };
    format!(", {} {records} in dead-letter files", group(dead_letters))
}

/// The `dead letters` column of a chunk table: shown only when some chunk has dead letters.
pub struct DeadLetterColumn {
    shown: bool,
}

impl DeadLetterColumn {
    /// The column over the chunks' dead-letter counts.
    pub fn new(mut counts: impl Iterator<Item = u64>) -> Self {
        DeadLetterColumn {
            shown: counts.any(|n| n > 0),
        }
    }

    /// The header cell (with its separator), or nothing.
    pub fn header(&self) -> String {
        if self.shown {
            format!("{:>12}  ", "dead letters")
        } else {
            String::new()
        }
    }

    /// A chunk's cell (with its separator), or nothing.
    pub fn cell(&self, dead_letters: u64) -> String {
        if self.shown {
            format!("{:>12}  ", group(dead_letters))
        } else {
            String::new()
        }
    }
}
