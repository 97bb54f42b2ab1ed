//! The operator's HTTP endpoints: `/healthz`, `/readyz`, `/metrics`.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::health::Health;
use crate::metrics::Metrics;

#[derive(Clone)]
struct Endpoints {
    health: Health,
    metrics: Metrics,
}

/// The router, separate from serving so tests can call it directly.
pub fn router(health: Health, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Endpoints { health, metrics })
}

/// 200 when subscribed and OpenWhisk accepts fires; 503 with every reason otherwise.
/// Feed triggers that are not accepting are listed under `triggers` either way.
async fn readyz(State(endpoints): State<Endpoints>) -> Response {
    let (status, mut body) = match endpoints.health.readiness() {
        Ok(()) => (StatusCode::OK, serde_json::json!({"ready": true})),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"ready": false, "reasons": reasons}),
        ),
    };
    let triggers = endpoints.health.trigger_problems();
    if !triggers.is_empty() {
        body["triggers"] = serde_json::json!(triggers);
    }
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(endpoints): State<Endpoints>) -> Response {
    // What /readyz would answer now, so that an alert can say "not ready" itself.
    let ready = endpoints.health.readiness().is_ok();
    endpoints.metrics.ready(ready);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        endpoints.metrics.encode(),
    )
        .into_response()
}
