//! `kind = "http"`: a declarative HTTP API source (docs/sources/http.md).
//!
//! The spec describes one stream of a REST API: where its records are, their declared schema,
//! how the chunk's time window and the next page are asked for, and how requests authenticate.
//! A chunk is a time window `[from, to)` of the stream's cursor field; every request draws from
//! the process's [`Budgets`] when the spec names a `rate_limit` pool.

mod auth;
mod breaker;
mod columns;
mod extract;
mod infer;
mod jsonpath;
mod paginate;
mod request;
mod spec;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use backhaul_core::chunking::DensityBucket;
use backhaul_core::connector::{
    BatchStream, BreakerReport, ColumnOrigin, ExtractNotes, RequestProfile, Source, TableDescription, channel_stream,
};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::ratelimit::Budgets;
use backhaul_core::registry::{SourceConfig, SourceKind};
use backhaul_core::spec::{parse_section, to_settings};
use backhaul_core::{Error, Result};
use futures::future::BoxFuture;

pub use auth::{UnixClock, hmac_message, system_clock};
pub use breaker::{BreakerState, CircuitBreaker};
pub use columns::{ColumnType, TimeFormat, parse_decimal};
pub use infer::infer_schema;
pub use jsonpath::JsonPath;
pub use request::{Prepared, retry_after};
pub use spec::{
    AuthSpec, BreakerSpec, ColumnSpec, HttpSourceSpec, KeyLocation, PaginationSpec, SignatureEncoding, StreamSpec,
    WindowLocation, WindowSpec,
};

use columns::{Column, schema_of};
use extract::Plan;
use request::Caller;

/// Bytes per record the planner assumes (records are small JSON objects).
const ESTIMATED_BYTES_PER_RECORD: f64 = 1024.0;
const DAY_MICROS: i64 = 86_400_000_000;

/// Registers `kind = "http"`; built sources draw from `budgets`.
#[derive(Debug, Clone, Default)]
pub struct HttpKind {
    budgets: Budgets,
}

impl HttpKind {
    /// The kind, with the process's request budgets.
    pub fn new(budgets: Budgets) -> Self {
        HttpKind { budgets }
    }
}

impl SourceKind for HttpKind {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn parse(&self, settings: &toml::Table, origin: &str) -> Result<Box<dyn SourceConfig>> {
        Ok(Box::new(HttpConfig {
            spec: parse_section(settings, "source", origin)?,
            budgets: self.budgets.clone(),
            origin: origin.into(),
        }))
    }
}

/// A parsed `[source]` of kind `http`.
#[derive(Debug)]
pub struct HttpConfig {
    /// The section.
    pub spec: HttpSourceSpec,
    budgets: Budgets,
    origin: String,
}

impl SourceConfig for HttpConfig {
    fn table(&self) -> &str {
        &self.spec.stream.name
    }
    fn cursor(&self) -> &str {
        &self.spec.stream.cursor_field
    }
    fn validate(&self, origin: &str) -> Result<()> {
        self.spec.validate(origin)
    }
    fn resolve_paths(&mut self, base: &Path) {
        self.spec.resolve_paths(base);
    }
    fn settings(&self) -> toml::Table {
        to_settings(&self.spec)
    }
    fn set_job_name(&mut self, job_name: &str) {
        self.spec.job_name = Some(job_name.to_string());
    }
    fn build(&self) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(HttpSource::build(
            self.spec.clone(),
            self.budgets.clone(),
            &self.origin,
            system_clock(),
        )?))
    }
}

/// A built HTTP source.
#[derive(Debug)]
pub struct HttpSource {
    plan: Arc<Plan>,
    caller: Arc<Caller>,
}

impl HttpSource {
    /// Builds the source (reads the secrets: IO). `clock` is the wall clock HMAC signs with.
    pub fn build(spec: HttpSourceSpec, budgets: Budgets, origin: &str, clock: UnixClock) -> Result<HttpSource> {
        spec.validate(origin)?;
        let columns: Vec<Column> = spec
            .columns
            .iter()
            .map(|c| {
                let format = if c.name == spec.stream.cursor_field {
                    c.format.or(spec.stream.cursor_format)
                } else {
                    c.format
                };
                Column {
                    name: c.name.clone(),
                    column_type: ColumnType::parse(&c.column_type).expect("validated"),
                    nullable: c.nullable,
                    format: format.unwrap_or_default(),
                }
            })
            .collect();
        let position = |name: &str| columns.iter().position(|c| c.name == name).expect("validated");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(spec.request_timeout_seconds))
            .build()
            .map_err(|e| Error::Internal(format!("http client: {e}")))?;
        let credentials = auth::Credentials::build(spec.auth.clone(), origin, clock)?;
        let caller = Caller::new(
            http,
            credentials,
            budgets,
            spec.rate_limit.clone(),
            CircuitBreaker::new(
                spec.circuit_breaker.failure_threshold,
                Duration::from_secs(spec.circuit_breaker.open_seconds),
            ),
            spec.max_retries,
            &spec.stream.name,
        );
        let plan = Plan {
            schema: schema_of(&columns),
            cursor: position(&spec.stream.cursor_field),
            keys: spec.stream.primary_key.iter().map(|k| position(k)).collect(),
            selector: JsonPath::parse(&spec.stream.record_selector).expect("validated"),
            columns,
            spec,
            dead_letters: AtomicU64::new(0),
        };
        Ok(HttpSource {
            plan: Arc::new(plan),
            caller: Arc::new(caller),
        })
    }

    /// Records this source refused into dead-letter files so far (all chunks).
    pub fn dead_letter_count(&self) -> u64 {
        self.plan.dead_letters.load(Ordering::Relaxed)
    }

    /// The dead-letter file a chunk over `range` writes (only when it refuses a record).
    pub fn dead_letter_path(&self, range: CursorRange) -> std::path::PathBuf {
        self.plan.dead_letter_path(range)
    }

    /// The circuit breaker's state now.
    pub fn breaker_state(&self) -> BreakerState {
        self.caller.breaker_state()
    }
}

/// What the record's JSON looks like for a declared column, for the type-fidelity report.
fn source_type(c: &Column) -> String {
    match c.column_type {
        ColumnType::Int64 => "json integer".into(),
        ColumnType::Float64 => "json number".into(),
        ColumnType::String => "json string".into(),
        ColumnType::Bool => "json boolean".into(),
        ColumnType::Date => "json string (date)".into(),
        ColumnType::Json => "json (any value)".into(),
        ColumnType::Timestamp => match c.format {
            TimeFormat::Rfc3339 => "json string (rfc3339 timestamp)".into(),
            TimeFormat::UnixSeconds => "json integer (unix seconds)".into(),
            TimeFormat::UnixMillis => "json integer (unix milliseconds)".into(),
        },
        ColumnType::Decimal { precision, scale } => format!("json number or string (decimal({precision},{scale}))"),
    }
}

impl Source for HttpSource {
    fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
        Box::pin(async move {
            let p = &self.plan;
            Ok(TableDescription {
                schema: p.schema.clone(),
                cursor_column: p.spec.stream.cursor_field.clone(),
                cursor_kind: CursorKind::Timestamp,
                key_columns: p.spec.stream.primary_key.clone(),
                columns: p
                    .columns
                    .iter()
                    .map(|c| ColumnOrigin {
                        name: c.name.clone(),
                        source_type: source_type(c),
                        lossy_step: None,
                    })
                    .collect(),
            })
        })
    }

    fn request_profile(&self) -> Option<RequestProfile> {
        Some(RequestProfile {
            records_per_request: self.plan.spec.page_size(),
            pool: self.plan.spec.rate_limit.clone(),
        })
    }

    /// An API cannot count cheaply: the spec's `estimated_records_per_day`, spread evenly, so
    /// the planner cuts the range into time windows.
    fn density(&self, range: CursorRange) -> BoxFuture<'_, Result<Vec<DensityBucket>>> {
        Box::pin(async move {
            let per_day = self.plan.spec.estimated_records_per_day as f64;
            let mut buckets = Vec::new();
            let mut from = range.from;
            while from < range.to {
                let to = (from.div_euclid(DAY_MICROS) + 1)
                    .saturating_mul(DAY_MICROS)
                    .min(range.to);
                let rows = per_day * (to - from) as f64 / DAY_MICROS as f64;
                buckets.push(DensityBucket {
                    range: CursorRange::new(from, to),
                    rows,
                    bytes: rows * ESTIMATED_BYTES_PER_RECORD,
                });
                from = to;
            }
            Ok(buckets)
        })
    }

    fn extract(&self, range: CursorRange, batch_rows: usize) -> BoxFuture<'_, Result<BatchStream>> {
        self.extract_with_notes(range, batch_rows, ExtractNotes::new())
    }

    /// Notes the chunk's dead letters: records written to its dead-letter file.
    fn extract_with_notes(
        &self,
        range: CursorRange,
        batch_rows: usize,
        notes: ExtractNotes,
    ) -> BoxFuture<'_, Result<BatchStream>> {
        Box::pin(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let task = tokio::spawn(extract::run_chunk(
                self.plan.clone(),
                self.caller.clone(),
                range,
                batch_rows,
                notes,
                tx,
            ));
            Ok(channel_stream(rx, task, "http extract"))
        })
    }

    fn circuit_breaker(&self) -> Option<BreakerReport> {
        Some(
            self.breaker_state()
                .report(tokio::time::Instant::now(), SystemTime::now()),
        )
    }
}
