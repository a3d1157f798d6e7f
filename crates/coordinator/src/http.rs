//! The coordinator's HTTP endpoint: `/metrics` for Prometheus, `/healthz` for probes, and a
//! status page (`/` lists jobs and rate-limit pools, `/jobs/{job}` draws each chunk's attempts on a time axis).
//! Pages are rendered on the server as HTML with inline SVG: no scripts, no CDN.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::error::CoordinatorError;
use crate::metrics::CoordinatorMetrics;
use crate::page;
use crate::pools::RatePools;
use crate::state::StateStore;

#[derive(Clone)]
struct AppState {
    store: Arc<dyn StateStore>,
    metrics: Arc<CoordinatorMetrics>,
    pools: Arc<RatePools>,
}

/// The routes, over the coordinator's store, counters and rate-limit pools.
pub fn router(store: Arc<dyn StateStore>, metrics: Arc<CoordinatorMetrics>, pools: Arc<RatePools>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/jobs/{job}", get(job_page))
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .with_state(AppState { store, metrics, pools })
}

fn failure(e: CoordinatorError) -> Response {
    let code = match e {
        CoordinatorError::UnknownJob(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, Html(page::error_page(&e.to_string()))).into_response()
}

async fn healthz(State(s): State<AppState>) -> Response {
    // Healthy means the state database answers.
    match s.store.ping().await {
        Ok(()) => "ok\n".into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "state database unavailable\n").into_response(),
    }
}

async fn metrics_page(State(s): State<AppState>) -> Response {
    match s.metrics.render(s.store.as_ref(), &s.pools.snapshot()).await {
        Ok(text) => ([(header::CONTENT_TYPE, backhaul_proto::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn index(State(s): State<AppState>) -> Response {
    let jobs = s.store.jobs().await;
    match jobs {
        Ok(jobs) => {
            let checks = page::checks_section(&s.metrics.checks());
            Html(
                page::index_page(&jobs, &s.pools.snapshot())
                    .replace("<p><a href=\"/metrics\">", &format!("{checks}<p><a href=\"/metrics\">")),
            )
            .into_response()
        }
        Err(e) => failure(e),
    }
}

async fn job_page(State(s): State<AppState>, Path(job_id): Path<String>) -> Response {
    let data = async {
        let job = s.store.job(&job_id).await?;
        let summary = s.store.summary(&job_id).await?;
        let chunks = s.store.chunks(&job_id).await?;
        let attempts = s.store.attempts(&job_id).await?;
        Ok::<_, CoordinatorError>((job, summary, chunks, attempts))
    }
    .await;
    match data {
        Ok((job, summary, chunks, attempts)) => Html(page::job_page(
            &job,
            &summary,
            &chunks,
            &attempts,
            crate::store::now_us(),
        ))
        .into_response(),
        Err(e) => failure(e),
    }
}
