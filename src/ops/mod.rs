//! The operator's HTTP listener (`rangedb server --http-addr ADDR`), off unless
//! asked for:
//!
//! | path | answer |
//! |---|---|
//! | `GET /health` | 200 `{"status":"alive"}` while the node runs (503 once it stopped) |
//! | `GET /ready` | 200 `{"ready":true}` when every hosted range has a known leader and has applied what it knows committed; 503 `{"ready":false,"reason":...}` otherwise |
//! | `GET /metrics` | Prometheus text format (metrics.rs) |
//! | `/v1/kv/...`, `/v1/status` | the key-value API and the cluster's status (kv.rs) |
//! | `GET /v1/metrics/history`, `GET /v1/events` | the last five minutes of this node's figures, one sample a second, and its recent events (history.rs) |
//! | `GET /`, `GET /ui` | the status page (status.html: one self-contained page that polls the three JSON paths above) |
//! | anything else | 404 `{"error":...}` |
//!
//! It runs on the real tokio runtime beside the node and reads only the node's
//! `Telemetry`; it is not part of the simulated build (`--cfg madsim`).

pub mod history;
pub mod kv;
pub mod metrics;
pub mod txn;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::client::Client;
use crate::node::telemetry::{Readiness, Telemetry};
use history::History;

/// The status page: HTML with its CSS and JS inline, nothing fetched from elsewhere.
pub const STATUS_PAGE: &str = include_str!("status.html");

/// What the handlers share.
struct Shared {
    telemetry: Arc<Telemetry>,
    registry: Registry,
    history: Arc<History>,
}

/// The listener's routes; the key-value API (`/v1/kv/...`) through `client`, the
/// status page's time series from `history`.
pub fn router(telemetry: Arc<Telemetry>, client: Client, history: Arc<History>) -> Router {
    let registry = metrics::registry(Arc::clone(&telemetry));
    let shared = Arc::new(Shared { telemetry, registry, history });
    let kv = Router::new()
        .route("/v1/kv/get", post(kv::get_json))
        .route("/v1/kv/put", post(kv::put_json))
        .route("/v1/kv/delete", post(kv::delete_json))
        .route("/v1/kv/range", post(kv::range_json))
        .route("/v1/kv/txn", post(txn::txn))
        .route("/v1/status", get(kv::status))
        .route("/v1/kv/{*key}", get(kv::get_path).put(kv::put_path).delete(kv::delete_path))
        .layer(DefaultBodyLimit::max(kv::BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn(kv::refuse_oversized))
        .with_state(client);
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(scrape))
        .route("/v1/metrics/history", get(metrics_history))
        .route("/v1/events", get(events))
        .route("/", get(status_page))
        .route("/ui", get(status_page))
        .with_state(shared)
        .merge(kv)
        .fallback(not_found)
}

/// Serves `router(telemetry, client, ...)` on `listener`, and samples `telemetry`
/// into the status page's history every second, until the task is dropped (the
/// server process exits when its node stops).
///
/// # Errors
/// An accept loop failure (axum retries transient accept errors itself).
pub async fn serve(
    listener: tokio::net::TcpListener,
    telemetry: Arc<Telemetry>,
    client: Client,
) -> std::io::Result<()> {
    let history = Arc::new(History::default());
    let app = router(Arc::clone(&telemetry), client, Arc::clone(&history));
    tokio::select! {
        biased;
        served = axum::serve(listener, app) => served,
        () = history::sample(telemetry, history) => Ok(()),
    }
}

async fn status_page() -> Html<&'static str> {
    Html(STATUS_PAGE)
}

async fn metrics_history(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.history.to_json()).into_response()
}

async fn events(State(shared): State<Arc<Shared>>) -> Response {
    Json(history::events_json(&shared.telemetry.events())).into_response()
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    match shared.telemetry.readiness() {
        Readiness::Stopped => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "stopped"}))).into_response()
        }
        _ => (StatusCode::OK, Json(json!({"status": "alive"}))).into_response(),
    }
}

async fn ready(State(shared): State<Arc<Shared>>) -> Response {
    let reason = match shared.telemetry.readiness() {
        Readiness::Ready => return (StatusCode::OK, Json(json!({"ready": true}))).into_response(),
        Readiness::Starting => {
            "starting: recovering its ranges, or founding or joining its cluster".to_string()
        }
        Readiness::Stopped => "stopped".to_string(),
        Readiness::NotReady { reason } => reason,
    };
    let body = Json(json!({"ready": false, "reason": reason}));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

async fn scrape(State(shared): State<Arc<Shared>>) -> Response {
    match metrics::encode(&shared.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => {
            let body = Json(json!({"error": "the metrics could not be encoded"}));
            (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
        }
    }
}

async fn not_found(uri: Uri) -> Response {
    kv::error(StatusCode::NOT_FOUND, format!("no such path: {}", uri.path()))
}
