//! Schedules in the PostgreSQL store: the SQLite store's table and rules
//! ([`crate::schedule::ScheduleStore`]), every change under the serving fence. A child module
//! of `pg_store` (included from there) so it shares the pool and the fence.

use tokio_postgres::Client;

use super::{CALL_BUDGET, CONFLICT_RETRIES, PgStore, int, text};
use crate::error::{CoordinatorError, Result};
use crate::schedule::sqlite::{SCHEDULE_SELECT, schedule_from_row};
use crate::schedule::{ScheduleRow, ScheduleStore, add_outcome};
use crate::store::Submitted;

/// The schedules table with PostgreSQL types (flags are `BIGINT` 0/1 as in SQLite, so one row
/// reader serves both).
pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS schedules (
    name           TEXT COLLATE "C" PRIMARY KEY,
    spec_toml      TEXT NOT NULL,
    base_dir       TEXT NOT NULL,
    cron           TEXT NOT NULL,
    time_zone      TEXT NOT NULL,
    paused         BIGINT NOT NULL DEFAULT 0,
    created_at_us  BIGINT NOT NULL,
    last_fired_us  BIGINT,
    last_run_job   TEXT,
    last_tick_us   BIGINT,
    run_requested  BIGINT NOT NULL DEFAULT 0,
    skipped_ticks  BIGINT NOT NULL DEFAULT 0
);
"#;

impl PgStore {
    async fn read_schedule(&self, c: &impl tokio_postgres::GenericClient, name: &str) -> Result<Option<ScheduleRow>> {
        c.query_typed_opt(&format!("{SCHEDULE_SELECT} WHERE name = $1"), &[text(&name)])
            .await
            .map_err(|e| self.err(e))?
            .map(|r| schedule_from_row(&r).map_err(|e| self.err(e)))
            .transpose()
    }

    async fn add_schedule_on(&self, c: &mut Client, s: &ScheduleRow) -> Result<Submitted> {
        let tx = self.begin_change(c).await?;
        let existing = tx
            .query_typed_opt(
                &format!("{SCHEDULE_SELECT} WHERE name = $1 FOR UPDATE"),
                &[text(&s.name)],
            )
            .await
            .map_err(|e| self.err(e))?
            .map(|r| schedule_from_row(&r).map_err(|e| self.err(e)))
            .transpose()?;
        if let Some(outcome) = add_outcome(&s.name, existing.as_ref(), s)? {
            return Ok(outcome);
        }
        let base_dir = s.base_dir.display().to_string();
        let paused = i64::from(s.paused);
        tx.execute_typed(
            "INSERT INTO schedules (name, spec_toml, base_dir, cron, time_zone, paused, created_at_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
            &[
                text(&s.name),
                text(&s.spec_toml),
                text(&base_dir),
                text(&s.cron),
                text(&s.time_zone),
                int(&paused),
                int(&s.created_at_us),
            ],
        )
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(Submitted::Created)
    }

    /// One change of `name`'s row; an unknown schedule is an error.
    async fn change_schedule(&self, c: &mut Client, name: &str, sql: &str, params: &[super::Param<'_>]) -> Result<()> {
        let tx = self.begin_change(c).await?;
        let n = tx.execute_typed(sql, params).await.map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        match n {
            0 => Err(CoordinatorError::UnknownSchedule(name.to_string())),
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl ScheduleStore for PgStore {
    async fn add_schedule(&self, schedule: ScheduleRow) -> Result<Submitted> {
        pooled!(self, CALL_BUDGET, |c| self.add_schedule_on(c, &schedule))
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        pooled!(self, CALL_BUDGET, |c| self.rows(
            &*c,
            &format!("{SCHEDULE_SELECT} ORDER BY name"),
            &[],
            schedule_from_row
        ))
    }

    async fn schedule(&self, name: &str) -> Result<ScheduleRow> {
        pooled!(self, CALL_BUDGET, |c| self.read_schedule(c, name))?
            .ok_or_else(|| CoordinatorError::UnknownSchedule(name.to_string()))
    }

    async fn set_schedule_paused(&self, name: &str, paused: bool, now_us: i64) -> Result<()> {
        if paused {
            return pooled!(self, CALL_BUDGET, |c| self.change_schedule(
                c,
                name,
                "UPDATE schedules SET paused = 1 WHERE name = $1",
                &[text(&name)]
            ));
        }
        pooled!(self, CALL_BUDGET, |c| self.change_schedule(
            c,
            name,
            "UPDATE schedules SET last_tick_us = CASE WHEN paused = 1 THEN $2 ELSE last_tick_us END, paused = 0
             WHERE name = $1",
            &[text(&name), int(&now_us)]
        ))
    }

    async fn request_run(&self, name: &str) -> Result<()> {
        pooled!(self, CALL_BUDGET, |c| self.change_schedule(
            c,
            name,
            "UPDATE schedules SET run_requested = 1 WHERE name = $1",
            &[text(&name)]
        ))
    }

    async fn record_fire(&self, name: &str, fired_us: i64, job_id: &str) -> Result<()> {
        pooled!(self, CALL_BUDGET, |c| self.change_schedule(
            c,
            name,
            "UPDATE schedules SET last_fired_us = $2, last_tick_us = $2, last_run_job = $3, run_requested = 0
             WHERE name = $1",
            &[text(&name), int(&fired_us), text(&job_id)]
        ))
    }

    async fn record_skip(&self, name: &str, at_us: i64) -> Result<()> {
        pooled!(self, CALL_BUDGET, |c| self.change_schedule(
            c,
            name,
            "UPDATE schedules SET last_tick_us = $2, skipped_ticks = skipped_ticks + 1 WHERE name = $1",
            &[text(&name), int(&at_us)]
        ))
    }

    async fn remove_schedule(&self, name: &str) -> Result<()> {
        pooled!(self, CALL_BUDGET, |c| self.change_schedule(
            c,
            name,
            "DELETE FROM schedules WHERE name = $1",
            &[text(&name)]
        ))
    }
}
