//! Creating the database and seeding whole days of generated orders.
//!
//! A day is seeded in one transaction together with its row in `_backhaul_seeded_days`, so a
//! process killed mid-seed leaves either the whole day or nothing, and the day table is exactly
//! the set of days present.

use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use backhaul_core::cursor::CursorRange;
use backhaul_core::{Error, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::generator::{self, DAY_MICROS, Order};
use crate::schema::DDL;
use crate::{BUSY_TIMEOUT, sql_error};

/// Bumped when the generator's output changes, so old databases are not silently mixed.
const GENERATOR_VERSION: &str = "1";

const INSERT_ORDER: &str = "INSERT INTO orders \
    (order_id, customer_id, created_at, amount, currency, status, attributes, note, shipped_on) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// What one seeding call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Days newly seeded (days seeded earlier are skipped).
    pub days: u64,
    /// Rows inserted.
    pub rows: u64,
    /// Estimated bytes inserted.
    pub bytes: u64,
    /// Wall time spent.
    pub elapsed: Duration,
}

/// Opens (creating when missing) a database for writing, in WAL mode.
fn open_for_write(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| sql_error(path, e))?;
    // WAL lets extract readers run while another day is being seeded; NORMAL sync is durable
    // enough for generated data that can always be regenerated.
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .map_err(|e| sql_error(path, e))?;
    // A larger page cache keeps the created_at index's hot pages in memory while a day is
    // inserted.
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -65536")
        .map_err(|e| sql_error(path, e))?;
    Ok(conn)
}

/// Creates the file and schema when missing, and records or checks the generator parameters.
pub(crate) fn init(path: &Path, seed: u64, rows_per_day: u64) -> Result<()> {
    let mut conn = open_for_write(path)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sql_error(path, e))?;
    tx.execute_batch(DDL).map_err(|e| sql_error(path, e))?;
    let wanted = [
        ("seed", seed.to_string()),
        ("rows_per_day", rows_per_day.to_string()),
        ("generator", GENERATOR_VERSION.to_string()),
    ];
    for (key, value) in &wanted {
        tx.execute(
            "INSERT OR IGNORE INTO _backhaul_meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )
        .map_err(|e| sql_error(path, e))?;
    }
    for (key, value) in &wanted {
        let stored: String = tx
            .query_row("SELECT value FROM _backhaul_meta WHERE key = ?1", [key], |r| r.get(0))
            .map_err(|e| sql_error(path, e))?;
        if &stored != value {
            return Err(Error::InvalidObject {
                object: format!("database {}", path.display()),
                message: format!(
                    "it was seeded with {key} = {stored} but the spec asks for {key} = {value}; \
                     use the original parameters or another file"
                ),
            });
        }
    }
    tx.commit().map_err(|e| sql_error(path, e))
}

/// Seeds every day in `days` (days since the epoch) that is not seeded yet.
pub(crate) fn seed_days(path: &Path, seed: u64, rows_per_day: u64, days: Range<i64>) -> Result<SeedReport> {
    let started = Instant::now();
    let mut conn = open_for_write(path)?;
    let mut report = SeedReport::default();
    let done = seeded_days(&conn, path, &days)?;
    for day in days.filter(|d| !done.contains(d)) {
        if let Some((rows, bytes)) = seed_day(&mut conn, path, seed, rows_per_day, day)? {
            report.days += 1;
            report.rows += rows;
            report.bytes += bytes;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn seeded_days(conn: &Connection, path: &Path, days: &Range<i64>) -> Result<std::collections::HashSet<i64>> {
    let mut stmt = conn
        .prepare("SELECT day FROM _backhaul_seeded_days WHERE day >= ?1 AND day < ?2")
        .map_err(|e| sql_error(path, e))?;
    let rows = stmt
        .query_map([days.start, days.end], |r| r.get(0))
        .map_err(|e| sql_error(path, e))?;
    rows.collect::<rusqlite::Result<_>>().map_err(|e| sql_error(path, e))
}

/// Binds one order's values by position and runs the insert; raw binding skips the per-call
/// parameter-count checks of `execute`, which matters at hundreds of thousands of rows a second.
fn insert_order(insert: &mut rusqlite::CachedStatement<'_>, o: &Order) -> rusqlite::Result<usize> {
    insert.raw_bind_parameter(1, o.order_id)?;
    insert.raw_bind_parameter(2, o.customer_id)?;
    insert.raw_bind_parameter(3, o.created_at)?;
    insert.raw_bind_parameter(4, o.amount_cents)?;
    insert.raw_bind_parameter(5, o.currency)?;
    insert.raw_bind_parameter(6, o.status)?;
    insert.raw_bind_parameter(7, o.attributes.as_deref())?;
    insert.raw_bind_parameter(8, o.note)?;
    insert.raw_bind_parameter(9, o.shipped_on)?;
    insert.raw_execute()
}

/// Seeds one day; `None` when another process seeded it first.
fn seed_day(conn: &mut Connection, path: &Path, seed: u64, rows_per_day: u64, day: i64) -> Result<Option<(u64, u64)>> {
    let err = |e| sql_error(path, e);
    // IMMEDIATE takes the write lock up front, so the check below cannot race another seeder.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let already = tx
        .query_row("SELECT 1 FROM _backhaul_seeded_days WHERE day = ?1", [day], |_| Ok(()))
        .optional()
        .map_err(err)?;
    if already.is_some() {
        return Ok(None);
    }
    let (mut rows, mut bytes, mut failed) = (0u64, 0u64, None);
    {
        let mut insert = tx.prepare_cached(INSERT_ORDER).map_err(err)?;
        let range = CursorRange::new(day * DAY_MICROS, (day + 1) * DAY_MICROS);
        generator::generate(seed, rows_per_day, range, |o| {
            if failed.is_some() {
                return;
            }
            let inserted = insert_order(&mut insert, o);
            match inserted {
                Ok(_) => {
                    rows += 1;
                    bytes += o.encoded_bytes();
                }
                Err(e) => failed = Some(e),
            }
        });
    }
    if let Some(e) = failed {
        return Err(err(e)); // Dropping `tx` rolls the partial day back.
    }
    tx.execute(
        "INSERT INTO _backhaul_seeded_days (day, rows, bytes) VALUES (?1, ?2, ?3)",
        params![day, rows as i64, bytes as i64],
    )
    .map_err(err)?;
    tx.commit().map_err(err)?;
    Ok(Some((rows, bytes)))
}
