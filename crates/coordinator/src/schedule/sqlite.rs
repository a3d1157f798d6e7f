//! Schedules in the embedded SQLite store, on its writer thread like every other change.

use rusqlite::{Connection, OptionalExtension, params};

use super::{ScheduleRow, ScheduleStore, add_outcome};
use crate::error::{CoordinatorError, Result};
use crate::store::{StateRow, Store, Submitted};

/// The schedules table; the PostgreSQL store creates the same with `BIGINT`s
/// ([`super::pg::SCHEMA`]).
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS schedules (
    name           TEXT PRIMARY KEY,
    spec_toml      TEXT NOT NULL,
    base_dir       TEXT NOT NULL,
    cron           TEXT NOT NULL,
    time_zone      TEXT NOT NULL,
    paused         INTEGER NOT NULL DEFAULT 0,
    created_at_us  INTEGER NOT NULL,
    last_fired_us  INTEGER,
    last_run_job   TEXT,
    last_tick_us   INTEGER,
    run_requested  INTEGER NOT NULL DEFAULT 0,
    skipped_ticks  INTEGER NOT NULL DEFAULT 0
);
"#;

/// Columns of a schedule in [`schedule_from_row`] order (shared with PostgreSQL).
pub(crate) const SCHEDULE_SELECT: &str = "SELECT name, spec_toml, base_dir, cron, time_zone, paused, created_at_us,
    last_fired_us, last_run_job, last_tick_us, run_requested, skipped_ticks FROM schedules";

/// A schedule from a row of [`SCHEDULE_SELECT`].
pub(crate) fn schedule_from_row<R: StateRow + ?Sized>(r: &R) -> std::result::Result<ScheduleRow, R::Error> {
    Ok(ScheduleRow {
        name: r.text(0)?,
        spec_toml: r.text(1)?,
        base_dir: r.text(2)?.into(),
        cron: r.text(3)?,
        time_zone: r.text(4)?,
        paused: r.int(5)? != 0,
        created_at_us: r.int(6)?,
        last_fired_us: r.opt_int(7)?,
        last_run_job: r.opt_text(8)?,
        last_tick_us: r.opt_int(9)?,
        run_requested: r.int(10)? != 0,
        skipped_ticks: r.int(11)?.max(0) as u64,
    })
}

fn db(store: &Store) -> impl Fn(rusqlite::Error) -> CoordinatorError + '_ {
    move |source| CoordinatorError::Database {
        path: store.path().to_string(),
        source,
    }
}

fn read(store: &Store, conn: &Connection, name: &str) -> Result<Option<ScheduleRow>> {
    conn.query_row(&format!("{SCHEDULE_SELECT} WHERE name = ?1"), [name], |r| {
        schedule_from_row(r)
    })
    .optional()
    .map_err(db(store))
}

/// Runs one change of `name`'s row; an unknown schedule is an error.
fn change(store: &Store, conn: &Connection, name: &str, sql: &str, values: impl rusqlite::Params) -> Result<()> {
    match conn.execute(sql, values).map_err(db(store))? {
        0 => Err(CoordinatorError::UnknownSchedule(name.to_string())),
        _ => Ok(()),
    }
}

#[tonic::async_trait]
impl ScheduleStore for Store {
    async fn add_schedule(&self, s: ScheduleRow) -> Result<Submitted> {
        self.call(move |store, conn| {
            if let Some(outcome) = add_outcome(&s.name, read(store, conn, &s.name)?.as_ref(), &s)? {
                return Ok(outcome);
            }
            conn.execute(
                "INSERT INTO schedules (name, spec_toml, base_dir, cron, time_zone, paused, created_at_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    s.name,
                    s.spec_toml,
                    s.base_dir.display().to_string(),
                    s.cron,
                    s.time_zone,
                    s.paused,
                    s.created_at_us
                ],
            )
            .map_err(db(store))?;
            Ok(Submitted::Created)
        })
        .await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        self.call(|store, conn| {
            let mut stmt = conn
                .prepare_cached(&format!("{SCHEDULE_SELECT} ORDER BY name"))
                .map_err(db(store))?;
            let rows = stmt
                .query_map([], |r| schedule_from_row(r))
                .map_err(db(store))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db(store))?;
            Ok(rows)
        })
        .await
    }

    async fn schedule(&self, name: &str) -> Result<ScheduleRow> {
        let name = name.to_string();
        self.call(move |store, conn| read(store, conn, &name)?.ok_or(CoordinatorError::UnknownSchedule(name)))
            .await
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool, now_us: i64) -> Result<()> {
        let name = name.to_string();
        self.call(move |store, conn| {
            if paused {
                return change(
                    store,
                    conn,
                    &name,
                    "UPDATE schedules SET paused = 1 WHERE name = ?1",
                    [&name],
                );
            }
            // Resuming forgets the ticks missed while paused; resuming a running one changes nothing.
            change(
                store,
                conn,
                &name,
                "UPDATE schedules SET last_tick_us = CASE WHEN paused = 1 THEN ?2 ELSE last_tick_us END, paused = 0
                 WHERE name = ?1",
                params![name, now_us],
            )
        })
        .await
    }

    async fn request_run(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.call(move |store, conn| {
            change(
                store,
                conn,
                &name,
                "UPDATE schedules SET run_requested = 1 WHERE name = ?1",
                [&name],
            )
        })
        .await
    }

    async fn record_fire(&self, name: &str, fired_us: i64, job_id: &str) -> Result<()> {
        let (name, job) = (name.to_string(), job_id.to_string());
        self.call(move |store, conn| {
            change(
                store,
                conn,
                &name,
                "UPDATE schedules SET last_fired_us = ?2, last_tick_us = ?2, last_run_job = ?3, run_requested = 0
                 WHERE name = ?1",
                params![name, fired_us, job],
            )
        })
        .await
    }

    async fn record_skip(&self, name: &str, at_us: i64) -> Result<()> {
        let name = name.to_string();
        self.call(move |store, conn| {
            change(
                store,
                conn,
                &name,
                "UPDATE schedules SET last_tick_us = ?2, skipped_ticks = skipped_ticks + 1 WHERE name = ?1",
                params![name, at_us],
            )
        })
        .await
    }

    async fn remove_schedule(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.call(move |store, conn| change(store, conn, &name, "DELETE FROM schedules WHERE name = ?1", [&name]))
            .await
    }
}
