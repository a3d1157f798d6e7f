//! The worker's HTTP endpoint: `/metrics` for Prometheus and `/healthz` for probes.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::WorkerMetrics;

#[derive(Clone)]
struct State {
    metrics: Arc<WorkerMetrics>,
    slots: usize,
}

/// The routes.
pub fn router(metrics: Arc<WorkerMetrics>, slots: usize) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(State { metrics, slots })
}

async fn metrics_page(axum::extract::State(s): axum::extract::State<State>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, backhaul_proto::metrics::CONTENT_TYPE)],
        s.metrics.render(s.slots),
    )
}
