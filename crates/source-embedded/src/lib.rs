//! An embedded source that needs no server: a SQLite file holding a realistic, time-ordered
//! `orders` table, seeded on demand by a deterministic, random-access [`generator`], and
//! extracted with the same SQL-with-a-cursor-predicate path real databases use.
//!
//! - [`EmbeddedSource::open`] creates the file and the empty schema when missing (IO at build
//!   time), so [`Source::describe`] works before anything is seeded; it refuses a file seeded
//!   with other generator parameters.
//! - [`Source::prepare`] seeds every day the range touches, each exactly once.
//! - [`Source::density`] answers from `_backhaul_seeded_days` (and the generator for days not
//!   seeded yet); it never counts the table.
//! - [`Source::extract`] streams `SELECT cols FROM t WHERE cursor >= ?1 AND cursor < ?2` as
//!   Arrow batches through a bounded channel. Rows whose cursor is NULL are in no range.
//!
//! Storage units (see [`schema`]): timestamps are INTEGER microseconds UTC, dates INTEGER days
//! since the epoch, `DECIMAL(p,s)` INTEGERs scaled by `10^s`, so cursor bounds compare directly.
//! Only `created_at` is indexed; other cursors work but scan the table.

mod extract;
pub mod generator;
pub mod schema;
mod seed;
pub mod spec;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backhaul_core::chunking::DensityBucket;
use backhaul_core::connector::{BatchStream, Source, TableDescription};
use backhaul_core::cursor::CursorRange;
use backhaul_core::profile::{Activity, ActivityQuery, Counted};
use backhaul_core::{Error, Result};
use futures::future::BoxFuture;
use rusqlite::{Connection, OpenFlags};

use crate::generator::{DAY_MICROS, MAX_SHIP_DELAY_DAYS, ORDER_ID_STRIDE};
use crate::schema::ORDERS_TABLE;
pub use crate::seed::SeedReport;
pub use crate::spec::{EmbeddedKind, EmbeddedSourceSpec};

/// How long a statement waits for another connection's lock before failing as transient.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Estimated bytes per row before any day is seeded (close to the generator's average).
const DEFAULT_ROW_BYTES: f64 = 130.0;
/// Share of orders that get a `shipped_on` day (statuses `shipped` and `delivered`).
const SHIPPED_FRACTION: f64 = 2.0 / 6.0;
/// Ranges wider than this many days are refused: seeding or planning them is a spec mistake.
const MAX_DAYS: i64 = 100 * 366;
/// Days since the epoch of 0001-01-01 and 9999-12-31: the calendar the cursor formats cover.
const DAY_BOUNDS: Range<i64> = -719_162..2_932_897;

/// The embedded SQLite source. Cheap to share: every operation opens its own connection on a
/// blocking thread.
#[derive(Debug, Clone)]
pub struct EmbeddedSource {
    path: PathBuf,
    table: String,
    cursor: String,
    seed: u64,
    rows_per_day: u64,
    layout: Layout,
}

/// How cursor values of the generated table relate to creation days, which is what is seeded
/// and what the statistics are kept by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `orders.created_at`: one bucket per day in microseconds.
    CreatedAt,
    /// `orders.shipped_on`: one bucket per day in days; shipping lags creation by 0-5 days.
    ShippedOn,
    /// `orders.order_id`: ids are `hour * 1_000_000 + i`, so a day is a contiguous id block.
    OrderId,
    /// A cursor the generator cannot map to days (or a table other than `orders`).
    Unmapped,
}

impl EmbeddedSource {
    /// Opens the source of `spec`. For the `orders` table this creates the file and empty schema
    /// when missing and records (or checks) the generator parameters; a file seeded with another
    /// `seed` or `rows_per_day` is refused with [`Error::InvalidObject`] naming the file.
    pub fn open(spec: &EmbeddedSourceSpec) -> Result<Self> {
        let layout = match (spec.table.as_str(), spec.cursor.as_str()) {
            (ORDERS_TABLE, "created_at") => Layout::CreatedAt,
            (ORDERS_TABLE, "shipped_on") => Layout::ShippedOn,
            (ORDERS_TABLE, "order_id") => Layout::OrderId,
            _ => Layout::Unmapped,
        };
        if spec.table == ORDERS_TABLE {
            seed::init(&spec.path, spec.seed, spec.rows_per_day)?;
        }
        Ok(EmbeddedSource {
            path: spec.path.clone(),
            table: spec.table.clone(),
            cursor: spec.cursor.clone(),
            seed: spec.seed,
            rows_per_day: spec.rows_per_day,
            layout,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seeds every not-yet-seeded creation day that rows of `range` (in cursor units) can come
    /// from, and reports what was done. A cursor the generator cannot map to days (e.g.
    /// `customer_id`) seeds nothing.
    pub async fn seed_range(&self, range: CursorRange) -> Result<SeedReport> {
        if self.table != ORDERS_TABLE {
            return Ok(SeedReport::default());
        }
        let Some(days) = creation_days(self.layout, range) else {
            tracing::warn!(cursor = %self.cursor, "the embedded source cannot tell which days a {} range needs; nothing seeded", self.cursor);
            return Ok(SeedReport::default());
        };
        let days = self.checked_days(days)?;
        let (path, seed, rows_per_day) = (self.path.clone(), self.seed, self.rows_per_day);
        let report = blocking(move || seed::seed_days(&path, seed, rows_per_day, days)).await?;
        if report.days > 0 {
            let rate = report.rows as f64 / report.elapsed.as_secs_f64().max(1e-9);
            tracing::info!(
                days = report.days,
                rows = report.rows,
                rows_per_sec = rate as u64,
                "seeded embedded source"
            );
        }
        Ok(report)
    }

    /// Refuses day ranges that are absurdly wide or outside the calendar.
    fn checked_days(&self, days: Range<i64>) -> Result<Range<i64>> {
        let too_wide = days.end - days.start > MAX_DAYS;
        let outside = days.start < DAY_BOUNDS.start || days.end > DAY_BOUNDS.end;
        if too_wide || outside {
            return Err(Error::InvalidObject {
                object: format!("database {}", self.path.display()),
                message: format!(
                    "the range covers days {}..{}; the embedded source serves at most {MAX_DAYS} days within years 1-9999",
                    days.start, days.end
                ),
            });
        }
        Ok(days)
    }

    /// Reads the seeded-day statistics for `days` and the average bytes per row so far.
    fn day_stats(path: &Path, days: Range<i64>) -> Result<SeededStats> {
        let conn = connect(path)?;
        let err = |e| sql_error(path, e);
        let mut stmt = conn
            .prepare("SELECT day, rows, bytes FROM _backhaul_seeded_days WHERE day >= ?1 AND day < ?2")
            .map_err(err)?;
        let rows = stmt
            .query_map([days.start, days.end], |r| {
                Ok((r.get::<_, i64>(0)?, (r.get::<_, f64>(1)?, r.get::<_, f64>(2)?)))
            })
            .map_err(err)?;
        let stats = rows.collect::<rusqlite::Result<HashMap<_, _>>>().map_err(err)?;
        let (rows, bytes): (f64, f64) = conn
            .query_row("SELECT total(rows), total(bytes) FROM _backhaul_seeded_days", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(err)?;
        let bytes_per_row = if rows > 0.0 { bytes / rows } else { DEFAULT_ROW_BYTES };
        Ok(SeededStats {
            by_day: stats,
            bytes_per_row,
        })
    }

    fn density_blocking(&self, range: CursorRange) -> Result<Vec<DensityBucket>> {
        let Some(days) = bucket_days(self.layout, range) else {
            return Ok(Vec::new());
        };
        let days = self.checked_days(days)?;
        let stats = Self::day_stats(&self.path, days.clone())?;
        let buckets = days
            .map(|day| {
                let (rows, bytes) = stats.by_day.get(&day).copied().unwrap_or_else(|| {
                    let rows = generator::rows_in_day(self.seed, self.rows_per_day, day) as f64;
                    (rows, rows * stats.bytes_per_row)
                });
                // Shipping days trail creation days by 0-5 days; the creation day's volume is a
                // close enough estimate of its shipping volume for planning.
                let share = if self.layout == Layout::ShippedOn {
                    SHIPPED_FRACTION
                } else {
                    1.0
                };
                DensityBucket {
                    range: bucket_range(self.layout, day),
                    rows: rows * share,
                    bytes: bytes * share,
                }
            })
            .collect();
        Ok(buckets)
    }
}

/// Statistics of seeded days.
struct SeededStats {
    /// `(rows, bytes)` of each seeded day asked for.
    by_day: HashMap<i64, (f64, f64)>,
    /// Average bytes per row over every seeded day, or a default before any is seeded.
    bytes_per_row: f64,
}

/// Creation days whose rows can fall in `range`, or `None` when the cursor does not map.
fn creation_days(layout: Layout, range: CursorRange) -> Option<Range<i64>> {
    let days = bucket_days(layout, range)?;
    Some(match layout {
        Layout::ShippedOn => days.start - MAX_SHIP_DELAY_DAYS..days.end,
        _ => days,
    })
}

/// Days (in creation-day or shipping-day numbering) whose buckets overlap `range`.
fn bucket_days(layout: Layout, range: CursorRange) -> Option<Range<i64>> {
    if range.from >= range.to {
        return Some(0..0);
    }
    let (first, last) = match layout {
        Layout::CreatedAt => (range.from.div_euclid(DAY_MICROS), (range.to - 1).div_euclid(DAY_MICROS)),
        Layout::ShippedOn => (range.from, range.to - 1),
        Layout::OrderId => {
            let ids_per_day = 24 * ORDER_ID_STRIDE;
            (
                range.from.div_euclid(ids_per_day),
                (range.to - 1).div_euclid(ids_per_day),
            )
        }
        Layout::Unmapped => return None,
    };
    Some(first..last + 1)
}

/// The cursor range of one day's bucket.
fn bucket_range(layout: Layout, day: i64) -> CursorRange {
    let width = match layout {
        Layout::CreatedAt => DAY_MICROS,
        Layout::OrderId => 24 * ORDER_ID_STRIDE,
        Layout::ShippedOn | Layout::Unmapped => 1,
    };
    CursorRange::new(day * width, (day + 1) * width)
}

/// Opens an existing database for reading; the file is never created here.
pub(crate) fn connect(path: &Path) -> Result<Connection> {
    // Read-write flags (without CREATE) because a WAL reader may need to create the -shm file.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| sql_error(path, e))?;
    conn.execute_batch("PRAGMA query_only = ON")
        .map_err(|e| sql_error(path, e))?;
    Ok(conn)
}

/// Maps a SQLite error to the core error whose variant carries the right retry class: a busy
/// or locked database is transient, everything else needs someone to look.
pub(crate) fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let code = match &e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
        _ => None,
    };
    match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Unreachable {
            system: "source".into(),
            message: format!("{}: {e}", path.display()),
        },
        Some(ErrorCode::CannotOpen) => Error::io(path, std::io::Error::other(e.to_string())),
        _ => Error::State(format!("{}: {e}", path.display())),
    }
}

/// Runs SQLite work off the async threads, turning a panicked task into an error.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("embedded source task failed: {e}")))?
}

impl EmbeddedSource {
    async fn describe_table(&self) -> Result<TableDescription> {
        let (path, table, cursor) = (self.path.clone(), self.table.clone(), self.cursor.clone());
        blocking(move || {
            if !path.exists() {
                return Err(schema::no_such_table(&path, &table));
            }
            let conn = connect(&path)?;
            schema::describe(&conn, &path, &table, &cursor)
        })
        .await
    }
}

impl Source for EmbeddedSource {
    fn describe(&self) -> BoxFuture<'_, Result<TableDescription>> {
        Box::pin(self.describe_table())
    }

    fn prepare(&self, range: CursorRange) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.seed_range(range).await.map(|_| ()) })
    }

    fn density(&self, range: CursorRange) -> BoxFuture<'_, Result<Vec<DensityBucket>>> {
        Box::pin(async move {
            if self.table != ORDERS_TABLE {
                return Ok(Vec::new()); // No statistics for tables the generator did not write.
            }
            let this = self.clone();
            blocking(move || this.density_blocking(range)).await
        })
    }

    fn extract(&self, range: CursorRange, batch_rows: usize) -> BoxFuture<'_, Result<BatchStream>> {
        Box::pin(async move {
            let desc = self.describe_table().await?;
            Ok(extract::stream(
                self.path.clone(),
                self.table.clone(),
                desc,
                range,
                batch_rows,
            ))
        })
    }

    /// The generated `orders` table is append-only by construction: rows are inserted once per
    /// creation time and never updated or deleted, so updates and deletes are exactly zero and
    /// inserts in a window are the generator's count of rows created in it (no rows are read).
    fn activity(&self, query: ActivityQuery) -> BoxFuture<'_, Result<Option<Activity>>> {
        Box::pin(async move {
            if self.table != ORDERS_TABLE || query.window.from >= query.window.to {
                return Ok(None);
            }
            let (seed, rows_per_day) = (self.seed, self.rows_per_day);
            let window = CursorRange::new(query.window.from, query.window.to);
            let inserts = blocking(move || Ok(generator::expected_rows(seed, rows_per_day, window))).await?;
            Ok(Some(Activity {
                inserts: Some(Counted::exact(inserts)),
                updated_keys: Some(Counted::exact(0)),
                deleted_keys: Some(Counted::exact(0)),
                touched_keys: Some(Counted::exact(inserts)),
                method: "embedded generator: append-only by construction (no updates or deletes); inserts \
                         counted by the generator for the window"
                    .into(),
            }))
        })
    }
}

#[cfg(test)]
mod tests;
