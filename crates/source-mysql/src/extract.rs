//! One chunk: a prepared statement with the range bounds as parameters, read unbuffered (row
//! by row, as the server sends them) inside a consistent-snapshot read-only transaction, and
//! decoded into Arrow batches that go through a bounded channel.
//!
//! Dropping the stream stops the reading task at once, even while it waits for the server
//! (it watches the channel close): it kills the query with `KILL QUERY` from a second session
//! and ends, within a bounded time. It is not aborted outright: an aborted task would drop its
//! connection mid-result, and the driver would then drain the rest of the chunk from the server
//! in a task of its own.
//!
//! Memory is bounded by the channel (2 batches) plus the batch being built, and a batch is cut
//! at `batch_rows` rows or [`MAX_BATCH_BYTES`], whichever comes first, so wide rows (MB-sized
//! JSON or blobs) cannot blow a batch up. When the consumer is slow the task stops reading, the
//! socket fills, and the server waits (`net_write_timeout` is raised for that).

use std::sync::Arc;
use std::time::Duration;

use crate::spec::ZeroDatePolicy;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use backhaul_core::connector::{BatchStream, channel_stream};
use backhaul_core::cursor::{CursorKind, CursorRange};
use backhaul_core::{Error, Result};
use chrono::{DateTime, Datelike, NaiveDate, Timelike};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Statement, Value};
use tokio::sync::mpsc;

use crate::conn::Connector;
use crate::decode::{ColumnDecoder, Problem, date_of_days, finish_batch};
use crate::schema::{Table, quote, quote_table};

/// Batches queued between the reading task and the consumer.
const CHANNEL_CAPACITY: usize = 2;
/// A batch is cut once its values hold about this many bytes, whatever `batch_rows` says.
pub(crate) const MAX_BATCH_BYTES: usize = 64 << 20;
/// How often (in rows) the reader checks whether the consumer went away mid-batch.
const CANCEL_CHECK_ROWS: usize = 1024;

type Item = Result<RecordBatch>;

/// Range bounds as statement parameters.
pub(crate) enum Bounds {
    /// No value of the column can be in the range.
    Empty,
    /// `cursor >= lower` and, when given, `cursor < upper`.
    Between(Value, Option<Value>),
}

/// 0000-01-01 and 10000-01-01: the DATE/DATETIME range. Zero dates sort below the lower end,
/// so they are in no range, like NULL.
fn calendar_days() -> (i64, i64) {
    let day = |y: i32| {
        NaiveDate::from_ymd_opt(y, 1, 1)
            .expect("valid")
            .signed_duration_since(DateTime::UNIX_EPOCH.date_naive())
            .num_days()
    };
    (day(0), day(10_000))
}

fn ceil_to(value: i64, step: i64) -> i64 {
    let rem = value.rem_euclid(step);
    if rem == 0 {
        value
    } else {
        value.saturating_add(step - rem)
    }
}

/// Converts `[from, to)` in cursor units to parameters of the column's type. Timestamp bounds
/// are rounded up to the column's fractional precision first: every stored value is a
/// multiple of that step, so `v >= from` and `v >= ceil(from)` select the same rows, and the
/// server never has to round a bound itself.
pub(crate) fn bounds(kind: CursorKind, step: i64, range: CursorRange) -> Bounds {
    match kind {
        CursorKind::Integer => Bounds::Between(Value::Int(range.from), Some(Value::Int(range.to))),
        CursorKind::Date => {
            let (min, max) = calendar_days();
            let (from, to) = (range.from.max(min), range.to);
            if from >= to || from >= max {
                return Bounds::Empty;
            }
            let date = |d: i64| {
                let date = date_of_days(d).expect("within the calendar");
                Value::Date(date.year() as u16, date.month() as u8, date.day() as u8, 0, 0, 0, 0)
            };
            Bounds::Between(date(from), (to < max).then(|| date(to)))
        }
        CursorKind::Timestamp => {
            let (min_day, max_day) = calendar_days();
            let (min, max) = (min_day * 86_400_000_000, max_day * 86_400_000_000);
            let from = ceil_to(range.from, step).max(min);
            let to = ceil_to(range.to, step);
            if from >= to || from >= max {
                return Bounds::Empty;
            }
            Bounds::Between(datetime_value(from), (to < max).then(|| datetime_value(to)))
        }
    }
}

fn datetime_value(micros: i64) -> Value {
    let t = DateTime::from_timestamp_micros(micros)
        .expect("within the calendar")
        .naive_utc();
    Value::Date(
        t.year() as u16,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.nanosecond() / 1_000,
    )
}

/// `WHERE` clause text for the bounds (`?` placeholders), or `None` when empty.
pub(crate) fn predicate(cursor: &str, bounds: &Bounds) -> Option<String> {
    match bounds {
        Bounds::Empty => None,
        Bounds::Between(_, Some(_)) => Some(format!("{c} >= ? AND {c} < ?", c = quote(cursor))),
        Bounds::Between(_, None) => Some(format!("{} >= ?", quote(cursor))),
    }
}

/// Starts the chunk's query and returns its rows as a stream. Connection, transaction and
/// statement errors are returned here; row errors come through the stream.
pub(crate) async fn extract(
    connector: &Connector,
    table: Arc<Table>,
    range: CursorRange,
    batch_rows: usize,
    zero_dates: ZeroDatePolicy,
) -> Result<BatchStream> {
    let batch_rows = batch_rows.max(1);
    let cursor = &table.columns[table.cursor];
    let bounds = bounds(table.description.cursor_kind, cursor.kind.cursor_step(), range);
    let Some(condition) = predicate(&cursor.name, &bounds) else {
        return Ok(futures::stream::empty().boxed());
    };
    // Key columns ride along (after the schema's columns) so an error can name the row.
    let extra_keys: Vec<&String> = table
        .key_columns
        .iter()
        .filter(|k| !table.columns.iter().any(|c| &c.name == *k))
        .collect();
    let select: Vec<String> = table
        .columns
        .iter()
        .map(|c| quote(&c.name))
        .chain(extra_keys.iter().map(|k| quote(k)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} WHERE {condition}",
        select.join(", "),
        quote_table(&table.database, &table.name)
    );
    let params = match bounds {
        Bounds::Between(lower, Some(upper)) => vec![lower, upper],
        Bounds::Between(lower, None) => vec![lower],
        Bounds::Empty => unreachable!("handled above"),
    };

    let what = format!(
        "reading {}.{} {}",
        table.database,
        table.name,
        range.display(table.description.cursor_kind)
    );
    let mut conn = connector.connect().await?;
    let setup = async {
        conn.query_drop("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await?;
        conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await?;
        conn.prep(sql.as_str()).await
    };
    let statement = setup.await.map_err(|e| connector.classify(e, &what))?;
    check_wire_types(&table, &statement)?;

    let (tx, rx) = mpsc::channel::<Item>(CHANNEL_CAPACITY);
    let reader = Reader {
        connector: connector.clone(),
        table,
        batch_rows,
        zero_dates,
        what,
    };
    let task = tokio::spawn(reader.run(conn, statement, params, tx));
    Ok(channel_stream(rx, task, "mysql extract"))
}

/// The statement's result columns must still be what the job was planned with.
fn check_wire_types(table: &Table, statement: &Statement) -> Result<()> {
    for (column, wire) in table.columns.iter().zip(statement.columns().iter()) {
        if !column.kind.matches_wire(wire.column_type(), wire.flags()) {
            return Err(Error::TypeFidelity(format!(
                "column {}.{}.{}: declared as `{}` but the server sends {:?}; did the table change? Plan the job again",
                table.database,
                table.name,
                column.name,
                column.source_type,
                wire.column_type()
            )));
        }
    }
    Ok(())
}

/// How reading ended.
enum End {
    /// Every row was read.
    Done,
    /// The consumer dropped the stream; rows are left on the server.
    Abandoned,
}

struct Reader {
    connector: Connector,
    table: Arc<Table>,
    batch_rows: usize,
    zero_dates: ZeroDatePolicy,
    what: String,
}

impl Reader {
    async fn run(self, mut conn: Conn, statement: Statement, params: Vec<Value>, tx: mpsc::Sender<Item>) {
        let connection_id = conn.id();
        let outcome = self.read(&mut conn, &statement, params, &tx).await;
        match outcome {
            Ok(End::Done) => {
                // All rows arrived; ending the read-only snapshot cannot change them.
                let _ = conn.query_drop("COMMIT").await;
                let _ = conn.disconnect().await;
            }
            Ok(End::Abandoned) => self.stop_server_side(conn, connection_id).await,
            Err(e) => {
                let connection_lost = e.class() != backhaul_core::ErrorClass::Permanent;
                // The consumer may be gone already; then nobody needs the error.
                let _ = tx.send(Err(e)).await;
                if connection_lost {
                    drop(conn);
                } else {
                    self.stop_server_side(conn, connection_id).await;
                }
            }
        }
    }

    /// Stops a query whose rows nobody will read, instead of letting the driver drain the rest
    /// of the chunk when the connection is dropped.
    async fn stop_server_side(&self, conn: Conn, connection_id: u32) {
        let kill = async {
            let mut side = self.connector.connect().await.ok()?;
            side.query_drop(format!("KILL QUERY {connection_id}")).await.ok()?;
            side.disconnect().await.ok()
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), kill).await;
        drop(conn);
    }

    async fn read(
        &self,
        conn: &mut Conn,
        statement: &Statement,
        params: Vec<Value>,
        tx: &mpsc::Sender<Item>,
    ) -> Result<End> {
        let table = &self.table;
        let schema: SchemaRef = table.description.schema.clone();
        let mut decoders = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let zero_as_null = self.zero_dates == ZeroDatePolicy::Null && i != table.cursor;
                ColumnDecoder::new(c.kind, zero_as_null, self.batch_rows.min(8192))
            })
            .collect::<Result<Vec<_>>>()?;
        // Every wait for the server also watches for the consumer dropping the stream.
        let mut result = tokio::select! {
            started = conn.exec_iter(statement, params) => started.map_err(|e| self.connector.classify(e, &self.what))?,
            () = tx.closed() => return Ok(End::Abandoned),
        };
        let mut rows = 0usize;
        let mut bytes = 0usize;
        loop {
            let next = tokio::select! {
                next = result.next() => next,
                () = tx.closed() => return Ok(End::Abandoned),
            };
            let row = match next {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) => return Err(self.connector.classify(e, &self.what)),
            };
            for (i, decoder) in decoders.iter_mut().enumerate() {
                let value = row.as_ref(i).unwrap_or(&Value::NULL);
                bytes += decoder.append(value).map_err(|p| self.row_error(&row, i, p))?;
            }
            rows += 1;
            if rows >= self.batch_rows || bytes >= MAX_BATCH_BYTES {
                if tx.send(Ok(finish_batch(&schema, &mut decoders)?)).await.is_err() {
                    return Ok(End::Abandoned);
                }
                rows = 0;
                bytes = 0;
            } else if rows.is_multiple_of(CANCEL_CHECK_ROWS) && tx.is_closed() {
                return Ok(End::Abandoned);
            }
        }
        drop(result);
        if decoders.first_mut().is_some_and(|d| d.len() > 0)
            && tx.send(Ok(finish_batch(&schema, &mut decoders)?)).await.is_err()
        {
            return Ok(End::Abandoned);
        }
        Ok(End::Done)
    }

    /// An error naming the table, the column, the row's cursor and key, and the value.
    fn row_error(&self, row: &Row, column: usize, problem: Problem) -> Error {
        let table = &self.table;
        let name = &table.columns[column].name;
        let cursor = &table.columns[table.cursor].name;
        let mut identity = vec![format!(
            "{cursor} = {}",
            show(row.as_ref(table.cursor).unwrap_or(&Value::NULL))
        )];
        for key in &table.key_columns {
            if key == cursor {
                continue;
            }
            let at = table.columns.iter().position(|c| &c.name == key).or_else(|| {
                let extra = table
                    .key_columns
                    .iter()
                    .filter(|k| !table.columns.iter().any(|c| &c.name == *k))
                    .position(|k| k == key)?;
                Some(table.columns.len() + extra)
            });
            if let Some(at) = at {
                identity.push(format!("{key} = {}", show(row.as_ref(at).unwrap_or(&Value::NULL))));
            }
        }
        let at = format!(
            "column {}.{}.{name}, row with {}",
            table.database,
            table.name,
            identity.join(", ")
        );
        match problem {
            Problem::ZeroDate(value) if column == table.cursor => Error::TypeFidelity(format!(
                "{at}: the cursor holds `{value}`, which is no calendar date and so in no range; fix the row"
            )),
            Problem::ZeroDate(value) => Error::TypeFidelity(format!(
                "{at}: `{value}` is no calendar date (MySQL zero date); fix the data, or set `source.zero_dates = \"null\"` to read such values as NULL"
            )),
            Problem::Unfit(message) => Error::TypeFidelity(format!("{at}: {message}")),
        }
    }
}

/// A short, human-readable rendering of a value for error messages.
fn show(value: &Value) -> String {
    match value {
        Value::Bytes(b) => {
            let text = String::from_utf8_lossy(b);
            let short: String = text.chars().take(64).collect();
            if short.len() < text.len() {
                format!("'{short}…'")
            } else {
                format!("'{short}'")
            }
        }
        other => other.as_sql(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(t: &str) -> i64 {
        DateTime::parse_from_rfc3339(t).unwrap().timestamp_micros()
    }

    #[test]
    fn timestamp_bounds_round_up_to_the_column_precision() {
        let range = CursorRange::new(micros("2024-01-01T00:00:00.4Z"), micros("2024-01-01T00:00:01.000001Z"));
        match bounds(CursorKind::Timestamp, 1_000_000, range) {
            Bounds::Between(lo, Some(hi)) => {
                assert_eq!(lo, Value::Date(2024, 1, 1, 0, 0, 1, 0));
                assert_eq!(hi, Value::Date(2024, 1, 1, 0, 0, 2, 0));
            }
            _ => panic!("expected a range"),
        }
        // Both ends round to the same second: no stored value lies between.
        let narrow = CursorRange::new(micros("2024-01-01T00:00:00.2Z"), micros("2024-01-01T00:00:00.9Z"));
        assert!(matches!(
            bounds(CursorKind::Timestamp, 1_000_000, narrow),
            Bounds::Empty
        ));
    }

    #[test]
    fn bounds_beyond_the_calendar_are_clamped() {
        let all = CursorRange::new(i64::MIN / 2, i64::MAX / 2);
        match bounds(CursorKind::Timestamp, 1, all) {
            Bounds::Between(lo, None) => assert_eq!(lo, Value::Date(0, 1, 1, 0, 0, 0, 0)),
            _ => panic!("expected an open upper end"),
        }
        let days = CursorRange::new(-1, 1);
        match bounds(CursorKind::Date, 1, days) {
            Bounds::Between(lo, Some(hi)) => {
                assert_eq!(lo, Value::Date(1969, 12, 31, 0, 0, 0, 0));
                assert_eq!(hi, Value::Date(1970, 1, 2, 0, 0, 0, 0));
            }
            _ => panic!("expected a range"),
        }
        let before = CursorRange::new(-100_000_000, -90_000_000);
        assert!(matches!(bounds(CursorKind::Date, 1, before), Bounds::Empty));
    }
}
