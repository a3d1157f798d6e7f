//! Airbyte source connectors (any local command speaking the Airbyte protocol, e.g.
//! `source-faker`) as backhaul sources: one stream a job.
//!
//! - [`Source::describe`] runs `spec`, `check` and `discover` once (cached) and maps the
//!   stream's JSON Schema to Arrow ([`schema`]).
//! - With `window`, [`Source::extract`] renders the chunk's `[from, to)` into the connector's
//!   config and runs `read`; records outside the window are dropped and counted in the log.
//! - Without it, the stream is one chunk ([`Source::density`] reports no statistics, so the
//!   default planner cuts nothing); its STATE messages are checkpointed together with the
//!   records before them ([`checkpoint`]), so a resumed chunk replays those and continues the
//!   connector from the state.
//!
//! `docs/sources/airbyte.md` documents keys, type mapping and exactly-once semantics.

mod batch;
mod checkpoint;
mod process;
mod protocol;
pub mod schema;
pub mod spec;

use std::ffi::OsString;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use backhaul_core::chunking::DensityBucket;
use backhaul_core::connector::{BatchStream, Source, TableDescription, channel_stream};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::spec::to_settings;
use backhaul_core::{Error, Result};
use chrono::{DateTime, NaiveDate};
use futures::future::BoxFuture;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{OnceCell, mpsc};

use crate::batch::{BatchBuilder, Kept};
use crate::checkpoint::{Checkpoint, next_replayed};
use crate::process::{Connector, Running};
use crate::protocol::{Catalog, Stream};
use crate::schema::Column;
pub use crate::spec::{AirbyteKind, AirbyteSourceSpec, WindowFormat, WindowSpec};

const DAY_MICROS: i64 = 86_400_000_000;
/// Density buckets are days; wider ranges get wider buckets so a plan stays cheap.
const MAX_BUCKETS: i64 = 20_000;

/// One stream of an Airbyte connector. Cheap to share.
pub struct AirbyteSource {
    inner: Arc<Inner>,
}

struct Inner {
    spec: AirbyteSourceSpec,
    connector: Connector,
    /// The connector's config with secrets merged in: written to private files only.
    config: Value,
    described: OnceCell<Described>,
    last_extract: Mutex<Option<ExtractStats>>,
}

impl std::fmt::Debug for AirbyteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AirbyteSource")
            .field("command", &self.inner.spec.command)
            .field("stream", &self.inner.spec.stream)
            .field("config", &"<redacted>")
            .finish()
    }
}

/// What the stream's catalog entry says, once discovered.
struct Described {
    stream_raw: Box<RawValue>,
    sync_mode: &'static str,
    columns: Arc<Vec<Column>>,
    cursor: usize,
    table: TableDescription,
}

/// What one extract did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Records replayed from the checkpoint (un-windowed streams).
    pub replayed: u64,
    /// Records the connector emitted in this run.
    pub read: u64,
    /// Records dropped because their cursor was outside the chunk (or NULL).
    pub outside: u64,
    /// Whether the connector was started with `--state`.
    pub resumed_from_state: bool,
}

/// Records read but not yet decoded, and the builder that decodes them.
struct Pending {
    builder: Option<BatchBuilder>,
    records: Vec<Box<RawValue>>,
}

impl Pending {
    fn new(builder: BatchBuilder) -> Self {
        Pending {
            builder: Some(builder),
            records: Vec::new(),
        }
    }

    /// Decodes the queued records into one batch on a blocking thread (JSON parsing and
    /// Arrow building are CPU work): the batch of records inside the chunk's range, and how
    /// many were outside it.
    async fn decode(&mut self) -> Result<(RecordBatch, u64)> {
        let mut builder = self.builder.take().expect("the builder comes back after every batch");
        let records = std::mem::take(&mut self.records);
        let (builder, decoded) = tokio::task::spawn_blocking(move || {
            let decoded = decode_all(&mut builder, &records);
            (builder, decoded)
        })
        .await
        .map_err(|e| Error::Internal(format!("airbyte record decoding failed: {e}")))?;
        self.builder = Some(builder);
        decoded
    }
}

fn decode_all(builder: &mut BatchBuilder, records: &[Box<RawValue>]) -> Result<(RecordBatch, u64)> {
    let mut outside = 0;
    for record in records {
        if builder.push(record)? == Kept::Outside {
            outside += 1;
        }
    }
    Ok((builder.finish()?, outside))
}

impl AirbyteSource {
    /// Reads the connector's config (file, environment) for `spec`; runs nothing yet.
    pub fn open(spec: AirbyteSourceSpec) -> Result<Self> {
        let mut config = match (&spec.config, &spec.config_file) {
            (_, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                serde_json::from_str(&text).map_err(|e| {
                    Error::config(
                        path.display().to_string(),
                        "<document>",
                        format!("not a JSON object: {e}"),
                    )
                })?
            }
            (Some(table), None) => serde_json::to_value(table).expect("TOML tables convert to JSON"),
            (None, None) => Value::Object(Default::default()),
        };
        if !config.is_object() {
            return Err(Error::config(
                "<spec>",
                "source.config_file",
                "the connector config must be a JSON object",
            ));
        }
        for (key, var) in &spec.config_env {
            let value = std::env::var(var).map_err(|_| {
                Error::config(
                    "<spec>",
                    format!("source.config_env.{key}"),
                    format!("environment variable `{var}` is not set"),
                )
            })?;
            set_key(&mut config, key, Value::String(value));
        }
        let connector = Connector {
            argv: spec.command.clone(),
            timeout: spec.timeout(),
        };
        Ok(AirbyteSource {
            inner: Arc::new(Inner {
                spec,
                connector,
                config,
                described: OnceCell::new(),
                last_extract: Mutex::new(None),
            }),
        })
    }

    /// What the last finished extract did.
    pub fn last_extract(&self) -> Option<ExtractStats> {
        *self.inner.last_extract.lock().expect("not poisoned")
    }
}

impl Source for AirbyteSource {
    fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
        Box::pin(async move { Ok(self.inner.described().await?.table.clone()) })
    }

    fn density(&self, range: CursorRange) -> BoxFuture<'_, Result<Vec<DensityBucket>>> {
        Box::pin(async move {
            let kind = self.inner.described().await?.table.cursor_kind;
            Ok(match &self.inner.spec.window {
                None => Vec::new(),
                Some(_) => self.inner.estimate(range, kind),
            })
        })
    }

    fn extract(&self, range: CursorRange, batch_rows: usize) -> BoxFuture<'_, Result<BatchStream>> {
        Box::pin(async move {
            self.inner.described().await?;
            let (tx, rx) = mpsc::channel(4);
            let inner = self.inner.clone();
            let task = tokio::spawn(async move {
                let mut stats = ExtractStats::default();
                match inner.read(range, batch_rows.max(1), &tx, &mut stats).await {
                    Ok(()) => {
                        if stats.outside > 0 {
                            tracing::info!(stream = %inner.spec.stream, outside = stats.outside, "records outside the chunk's window (or with a NULL cursor) were not loaded");
                        }
                        *inner.last_extract.lock().expect("not poisoned") = Some(stats);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                    }
                }
            });
            Ok(channel_stream(rx, task, "airbyte extract"))
        })
    }
}

impl Inner {
    async fn described(&self) -> Result<&Described> {
        self.described.get_or_try_init(|| self.discover()).await
    }

    /// `spec`, `check` and `discover`; the stream, its columns and cursor.
    async fn discover(&self) -> Result<Described> {
        let files = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let config = write_json(files.path(), "config.json", &self.config)?;

        let spec = self.run_for(&["spec".into()], "SPEC").await?;
        self.check_window_keys(spec.as_ref())?;
        let check = self
            .run_message(
                &["check".into(), "--config".into(), config.clone()],
                "CONNECTION_STATUS",
            )
            .await?;
        if let Some(status) = check.connection_status
            && status.status != "SUCCEEDED"
        {
            return Err(Error::InvalidObject {
                object: self.connector.name(),
                message: format!("`check` failed: {}", status.message.unwrap_or_default()),
            });
        }
        let catalog = self
            .run_message(&["discover".into(), "--config".into(), config], "CATALOG")
            .await?;
        let catalog: Catalog = catalog.catalog.expect("CATALOG message has a catalog");
        let streams = catalog
            .streams
            .into_iter()
            .map(|raw| Stream::parse(&raw).map(|s| (s, raw)))
            .collect::<serde_json::Result<Vec<_>>>()
            .map_err(|e| Error::InvalidObject {
                object: self.connector.name(),
                message: format!("its catalog is malformed: {e}"),
            })?;
        let names: Vec<String> = streams.iter().map(|(s, _)| format!("`{}`", s.name)).collect();
        let Some((stream, stream_raw)) = streams.into_iter().find(|(s, _)| s.name == self.spec.stream) else {
            return Err(Error::InvalidObject {
                object: format!("airbyte stream `{}`", self.spec.stream),
                message: format!("not in the connector's catalog; it has {}", names.join(", ")),
            });
        };
        self.describe_stream(stream, stream_raw)
    }

    fn describe_stream(&self, stream: Stream, stream_raw: Box<RawValue>) -> Result<Described> {
        let columns = schema::columns(&stream)?;
        let arrow: SchemaRef = Arc::new(schema::arrow_schema(&columns));
        let names = || {
            columns
                .iter()
                .map(|c| format!("`{}`", c.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let missing = |what: &str, field: &str| Error::InvalidObject {
            object: format!("airbyte stream `{}`", stream.name),
            message: format!("{what} `{field}` is not one of its fields: {}", names()),
        };
        let cursor_field = &self.spec.cursor_field;
        let cursor = columns
            .iter()
            .position(|c| &c.name == cursor_field)
            .ok_or_else(|| missing("cursor field", cursor_field))?;
        let cursor_kind = CursorKind::of(&columns[cursor].ty.arrow()).ok_or_else(|| Error::InvalidObject {
            object: format!("airbyte stream `{}`", stream.name),
            message: format!(
                "cursor field `{cursor_field}` is {}; a cursor must be a date-time, date or integer",
                columns[cursor].source_type
            ),
        })?;
        if self.spec.window.is_some() && cursor_kind == CursorKind::Integer {
            return Err(Error::InvalidObject {
                object: format!("airbyte stream `{}`", stream.name),
                message: format!("`window` needs a date-time or date cursor; `{cursor_field}` is an integer"),
            });
        }
        let keys: Vec<String> = match &self.spec.primary_key {
            Some(keys) => keys.clone(),
            None => stream
                .source_defined_primary_key
                .iter()
                .filter(|path| path.len() == 1)
                .map(|path| path[0].clone())
                .collect(),
        };
        if let Some(key) = keys.iter().find(|k| !columns.iter().any(|c| &c.name == *k)) {
            return Err(missing("primary key", key));
        }
        let modes = &stream.supported_sync_modes;
        let incremental = modes.iter().any(|m| m == "incremental");
        // Windows are exact reads of a range; un-windowed streams resume from their state.
        let sync_mode = match (&self.spec.window, incremental) {
            (None, true) => "incremental",
            (Some(_), _) if modes.iter().any(|m| m == "full_refresh") || modes.is_empty() => "full_refresh",
            (Some(_), true) => "incremental",
            _ => "full_refresh",
        };
        Ok(Described {
            stream_raw,
            sync_mode,
            cursor,
            table: TableDescription {
                schema: arrow,
                cursor_column: cursor_field.clone(),
                cursor_kind,
                key_columns: keys,
                columns: schema::origins(&columns),
            },
            columns: Arc::new(columns),
        })
    }

    /// The window keys must be properties of the connector's config spec (when it lists them).
    fn check_window_keys(&self, spec: Option<&Value>) -> Result<()> {
        let (Some(window), Some(properties)) = (
            &self.spec.window,
            spec.and_then(|s| s.pointer("/connectionSpecification/properties"))
                .and_then(Value::as_object),
        ) else {
            return Ok(());
        };
        for (field, key) in [
            ("source.window.start_key", &window.start_key),
            ("source.window.end_key", &window.end_key),
        ] {
            let top = key.split('.').next().unwrap_or_default();
            if !properties.contains_key(top) {
                let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                return Err(Error::config(
                    "<spec>",
                    field,
                    format!(
                        "the connector's config has no `{top}`; its keys are {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Runs a command to the end and returns its first message of type `kind`.
    async fn run_message(&self, args: &[OsString], kind: &str) -> Result<protocol::Message> {
        let mut run = self.connector.start(args)?;
        let mut found = None;
        while let Some(m) = run.next().await? {
            if m.kind == kind && found.is_none() {
                found = Some(m);
            }
        }
        run.finish().await?;
        found.ok_or_else(|| Error::InvalidObject {
            object: self.connector.name(),
            message: format!(
                "`{}` printed no {kind} message",
                args.first().map(|a| a.to_string_lossy()).unwrap_or_default()
            ),
        })
    }

    /// `spec`'s SPEC object.
    async fn run_for(&self, args: &[OsString], kind: &str) -> Result<Option<Value>> {
        Ok(self.run_message(args, kind).await?.spec)
    }

    /// Estimated rows and bytes: `estimated_records_per_day` spread evenly.
    fn estimate(&self, range: CursorRange, kind: CursorKind) -> Vec<DensityBucket> {
        let day = if kind == CursorKind::Date { 1 } else { DAY_MICROS };
        let days = (range.width() + day - 1) / day;
        let width = day * ((days + MAX_BUCKETS - 1) / MAX_BUCKETS).max(1);
        let per_unit = self.spec.estimated_records_per_day as f64 / day as f64;
        let mut buckets = Vec::new();
        let mut from = range.from;
        while from < range.to {
            let to = from.saturating_add(width).min(range.to);
            let rows = per_unit * (to - from) as f64;
            buckets.push(DensityBucket {
                range: CursorRange::new(from, to),
                rows,
                bytes: rows * self.spec.estimated_bytes_per_record as f64,
            });
            from = to;
        }
        buckets
    }

    /// The connector config of one run: the window rendered in when there is one.
    fn run_config(&self, range: CursorRange, kind: CursorKind) -> Value {
        let mut config = self.config.clone();
        if let Some(window) = &self.spec.window {
            let (from, to) = render_window(range, kind, window.format);
            set_key(&mut config, &window.start_key, Value::String(from));
            set_key(&mut config, &window.end_key, Value::String(to));
        }
        config
    }

    /// `read` of the chunk `range` into batches on `tx`.
    async fn read(
        &self,
        range: CursorRange,
        batch_rows: usize,
        tx: &mpsc::Sender<Result<RecordBatch>>,
        stats: &mut ExtractStats,
    ) -> Result<()> {
        let d = self.described().await?;
        let mut builder = Pending::new(BatchBuilder::new(
            &self.spec.stream,
            d.columns.clone(),
            d.table.schema.clone(),
            d.cursor,
            range,
        ));
        let files = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let config = write_json(
            files.path(),
            "config.json",
            &self.run_config(range, d.table.cursor_kind),
        )?;
        let catalog = configured_catalog(d, &self.spec.cursor_field)?;
        let catalog = write_json(files.path(), "catalog.json", &catalog)?;
        let mut args: Vec<OsString> = vec!["read".into(), "--config".into(), config, "--catalog".into(), catalog];

        let mut checkpoint = None;
        if self.spec.window.is_none() {
            let (c, mut resume) = Checkpoint::open(&self.spec.state_dir, &self.checkpoint_name(range))?;
            if let Some(reader) = resume.replay.as_mut() {
                let mut line = String::new();
                while next_replayed(reader, &mut line)? {
                    let data = RawValue::from_string(line.trim_end().to_string())
                        .map_err(|e| Error::State(format!("a checkpointed record is not JSON: {e}")))?;
                    self.keep(&mut builder, data, batch_rows, tx, stats).await?;
                    stats.replayed += 1;
                }
                tracing::info!(stream = %self.spec.stream, records = resume.replay_records, "replayed checkpointed records; the connector continues from its last state");
            }
            if let Some(state) = &resume.state {
                args.push("--state".into());
                args.push(write_json(files.path(), "state.json", state)?);
                stats.resumed_from_state = true;
            }
            checkpoint = Some(c);
        }

        let mut run: Running = self.connector.start(&args)?;
        loop {
            // A dropped stream stops the run at once, not at its next full batch.
            let message = tokio::select! {
                m = run.next() => m?,
                () = tx.closed() => return Err(Error::Cancelled),
            };
            let Some(message) = message else { break };
            match (message.kind.as_str(), message.record, message.state) {
                ("RECORD", Some(record), _) if record.stream == self.spec.stream => {
                    if let Some(c) = checkpoint.as_mut() {
                        c.record(record.data.get())?;
                    }
                    stats.read += 1;
                    self.keep(&mut builder, record.data, batch_rows, tx, stats).await?;
                }
                ("STATE", _, Some(state)) => {
                    if let Some(c) = checkpoint.as_mut() {
                        c.state(state)?;
                    }
                }
                _ => {}
            }
        }
        run.finish().await?;
        let (batch, outside) = builder.decode().await?;
        stats.outside += outside;
        if batch.num_rows() > 0 {
            let _ = tx.send(Ok(batch)).await;
        }
        Ok(())
    }

    /// Queues one record; every `batch_rows` records become a batch (decoded off the IO
    /// runtime) that is sent on.
    async fn keep(
        &self,
        pending: &mut Pending,
        data: Box<RawValue>,
        batch_rows: usize,
        tx: &mpsc::Sender<Result<RecordBatch>>,
        stats: &mut ExtractStats,
    ) -> Result<()> {
        pending.records.push(data);
        if pending.records.len() < batch_rows {
            return Ok(());
        }
        let (batch, outside) = pending.decode().await?;
        stats.outside += outside;
        if batch.num_rows() > 0 && tx.send(Ok(batch)).await.is_err() {
            // The consumer is gone: stop (the connector is killed on drop).
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    /// The checkpoint directory of one chunk: stream, range and the spec as written (the
    /// environment's secrets are not part of it), so another spec never resumes this one's.
    fn checkpoint_name(&self, range: CursorRange) -> String {
        let spec = toml::to_string(&to_settings(&self.spec)).expect("settings serialize");
        let hash = xxhash_rust::xxh3::xxh3_64(format!("{spec}\n{}..{}", range.from, range.to).as_bytes());
        let stream: String = self
            .spec
            .stream
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{stream}-{hash:016x}")
    }
}

/// The configured catalog of `read`: the one stream, as discovered.
fn configured_catalog(d: &Described, cursor_field: &str) -> Result<Value> {
    let stream: Value = serde_json::from_str(d.stream_raw.get()).map_err(|e| Error::Internal(e.to_string()))?;
    let keys: Vec<Vec<&str>> = d.table.key_columns.iter().map(|k| vec![k.as_str()]).collect();
    Ok(serde_json::json!({
        "streams": [{
            "stream": stream,
            "sync_mode": d.sync_mode,
            "destination_sync_mode": "append",
            "cursor_field": [cursor_field],
            "primary_key": keys,
        }]
    }))
}

/// Writes `value` to `<dir>/<name>` (a private temporary directory) and returns the path.
fn write_json(dir: &Path, name: &str, value: &Value) -> Result<OsString> {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(value).expect("JSON values serialize"))
        .map_err(|e| Error::io(&path, e))?;
    Ok(path.into_os_string())
}

/// Sets the dotted `key` of a JSON object, creating objects on the way.
fn set_key(config: &mut Value, key: &str, value: Value) {
    let mut at = config;
    let parts: Vec<&str> = key.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if !at.get(*part).is_some_and(Value::is_object) {
            at[*part] = Value::Object(Default::default());
        }
        at = &mut at[*part];
    }
    at[parts[parts.len() - 1]] = value;
}

/// `[from, to)` as text: exact RFC 3339, or whole days covering the range.
fn render_window(range: CursorRange, kind: CursorKind, format: WindowFormat) -> (String, String) {
    let (from_micros, to_micros) = match kind {
        CursorKind::Date => (range.from * DAY_MICROS, range.to * DAY_MICROS),
        _ => (range.from, range.to),
    };
    match format {
        WindowFormat::Rfc3339 => (
            CursorKind::Timestamp.format(from_micros),
            CursorKind::Timestamp.format(to_micros),
        ),
        WindowFormat::Date => {
            let day = |days: i64| {
                DateTime::from_timestamp_micros(days * DAY_MICROS)
                    .map(|t| t.date_naive())
                    .unwrap_or(NaiveDate::MIN)
                    .to_string()
            };
            (
                day(from_micros.div_euclid(DAY_MICROS)),
                day(to_micros.div_euclid(DAY_MICROS) + i64::from(to_micros.rem_euclid(DAY_MICROS) != 0)),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_render_exactly_or_as_covering_days() {
        // 2024-01-01T06:00:00Z .. 2024-01-03T00:00:00Z
        let range = CursorRange::new(1_704_088_800_000_000, 1_704_240_000_000_000);
        assert_eq!(
            render_window(range, CursorKind::Timestamp, WindowFormat::Rfc3339),
            ("2024-01-01T06:00:00Z".into(), "2024-01-03T00:00:00Z".into())
        );
        assert_eq!(
            render_window(range, CursorKind::Timestamp, WindowFormat::Date),
            ("2024-01-01".into(), "2024-01-03".into())
        );
        let range = CursorRange::new(1_704_088_800_000_000, 1_704_240_000_000_001);
        assert_eq!(
            render_window(range, CursorKind::Timestamp, WindowFormat::Date).1,
            "2024-01-04"
        );
    }

    #[test]
    fn secrets_from_the_environment_are_merged_but_never_shown() {
        let spec = |var: &str| -> AirbyteSourceSpec {
            toml::from_str(&format!(
                "command = [\"source-x\"]\nstream = \"s\"\ncursor_field = \"at\"\nconfig_env = {{ \"credentials.token\" = \"{var}\" }}\n"
            ))
            .unwrap()
        };
        // SAFETY: no other thread of this test binary reads this variable.
        unsafe { std::env::set_var("BACKHAUL_TEST_AIRBYTE_TOKEN", "tok-not-for-printing") };
        let source = AirbyteSource::open(spec("BACKHAUL_TEST_AIRBYTE_TOKEN")).unwrap();
        assert_eq!(source.inner.config["credentials"]["token"], "tok-not-for-printing");
        assert!(!format!("{source:?}").contains("tok-not"));
        let e = AirbyteSource::open(spec("BACKHAUL_TEST_AIRBYTE_UNSET"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "<spec>: source.config_env.credentials.token: environment variable `BACKHAUL_TEST_AIRBYTE_UNSET` is not set"
        );
    }

    #[test]
    fn dotted_keys_set_nested_values() {
        let mut config = serde_json::json!({"count": 1, "credentials": {"kind": "token"}});
        set_key(&mut config, "credentials.token", Value::String("s".into()));
        set_key(&mut config, "a.b", Value::Bool(true));
        assert_eq!(
            config,
            serde_json::json!({"count": 1, "credentials": {"kind": "token", "token": "s"}, "a": {"b": true}})
        );
    }
}
