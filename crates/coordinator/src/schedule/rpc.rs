//! The `Schedules` gRPC service (`proto/backhaul/v1/coordinator.proto`): `backhaul schedule
//! add|list|pause|resume|run-now|remove` against a coordinator.

use std::path::PathBuf;
use std::sync::Arc;

use backhaul_core::spec::{JobSpec, PipelineSpec, is_pipeline};
use backhaul_proto::v1 as pb;
use backhaul_proto::v1::schedules_server::{Schedules, SchedulesServer};
use tonic::{Request, Response, Status};
use tracing::info;

use super::{ScheduleRow, SchedulerHandle};
use crate::clock::Clock;
use crate::error::CoordinatorError;
use crate::state::StateStore;

/// The service over the coordinator's state; pokes the scheduler after each change.
pub struct ScheduleRpc {
    store: Arc<dyn StateStore>,
    scheduler: SchedulerHandle,
    clock: Arc<dyn Clock>,
}

impl ScheduleRpc {
    /// The tonic server of the service.
    pub fn server(
        store: Arc<dyn StateStore>,
        scheduler: SchedulerHandle,
        clock: Arc<dyn Clock>,
    ) -> SchedulesServer<ScheduleRpc> {
        SchedulesServer::new(ScheduleRpc {
            store,
            scheduler,
            clock,
        })
    }
}

/// A schedule on the wire.
pub fn schedule_pb(s: &ScheduleRow) -> pb::Schedule {
    pb::Schedule {
        name: s.name.clone(),
        cron: s.cron.clone(),
        time_zone: s.time_zone.clone(),
        paused: s.paused,
        next_tick_us: s.next_tick_us().unwrap_or(0),
        last_fired_us: s.last_fired_us.unwrap_or(0),
        last_run_job: s.last_run_job.clone().unwrap_or_default(),
        run_requested: s.run_requested,
        skipped_ticks: s.skipped_ticks,
    }
}

/// The name a schedule of `spec_toml` gets: its job's `name`, or its pipeline's
/// `pipeline.name`, once the spec passed its pure checks.
fn schedule_name(spec_toml: &str, origin: &str) -> backhaul_core::Result<String> {
    if is_pipeline(spec_toml) {
        let spec = PipelineSpec::from_toml(spec_toml, origin)?;
        spec.validate(origin)?;
        return Ok(spec.pipeline.name);
    }
    let spec = JobSpec::from_toml(spec_toml, origin)?;
    spec.validate(origin)?;
    Ok(spec.name)
}

fn status(e: CoordinatorError) -> Status {
    match &e {
        CoordinatorError::UnknownSchedule(_) => Status::not_found(e.to_string()),
        CoordinatorError::ScheduleChanged { .. } => Status::already_exists(e.to_string()),
        CoordinatorError::Core(backhaul_core::Error::Config { .. }) => Status::invalid_argument(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

#[tonic::async_trait]
impl Schedules for ScheduleRpc {
    async fn add_schedule(
        &self,
        req: Request<pb::AddScheduleRequest>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let r = req.into_inner();
        let origin = if r.spec_origin.is_empty() {
            "<scheduled spec>".to_string()
        } else {
            r.spec_origin
        };
        let name = schedule_name(&r.spec_toml, &origin).map_err(|e| status(e.into()))?;
        let zone = if r.time_zone.is_empty() { "UTC" } else { &r.time_zone };
        let row = ScheduleRow::new(
            &name,
            r.spec_toml,
            PathBuf::from(r.base_dir),
            &r.cron,
            zone,
            &origin,
            self.clock.now_us(),
        )
        .map_err(status)?;
        let how = self.store.add_schedule(row).await.map_err(status)?;
        let stored = self.store.schedule(&name).await.map_err(status)?;
        info!(schedule = %stored.name, cron = %stored.cron, zone = %stored.time_zone, "schedule added");
        self.scheduler.poke();
        Ok(Response::new(pb::ScheduleResponse {
            schedule: Some(schedule_pb(&stored)),
            created: how == crate::store::Submitted::Created,
        }))
    }

    async fn list_schedules(
        &self,
        _: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let all = self.store.schedules().await.map_err(status)?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: all.iter().map(schedule_pb).collect(),
        }))
    }

    async fn change_schedule(
        &self,
        req: Request<pb::ChangeScheduleRequest>,
    ) -> Result<Response<pb::ScheduleResponse>, Status> {
        let r = req.into_inner();
        let now = self.clock.now_us();
        let name = r.name.as_str();
        match pb::ScheduleAction::try_from(r.action).unwrap_or(pb::ScheduleAction::Unspecified) {
            pb::ScheduleAction::Pause => self.store.set_schedule_paused(name, true, now).await,
            pb::ScheduleAction::Resume => self.store.set_schedule_paused(name, false, now).await,
            pb::ScheduleAction::RunNow => self.store.request_run(name).await,
            pb::ScheduleAction::Remove => {
                self.store.remove_schedule(name).await.map_err(status)?;
                info!(schedule = %name, "schedule removed");
                return Ok(Response::new(pb::ScheduleResponse::default()));
            }
            pb::ScheduleAction::Unspecified => return Err(Status::invalid_argument("no schedule action given")),
        }
        .map_err(status)?;
        info!(schedule = %name, action = r.action, "schedule changed");
        self.scheduler.poke();
        let stored = self.store.schedule(name).await.map_err(status)?;
        Ok(Response::new(pb::ScheduleResponse {
            schedule: Some(schedule_pb(&stored)),
            created: false,
        }))
    }
}
