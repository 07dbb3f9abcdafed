//! The operator's HTTP listener: `GET /metrics` (OpenMetrics text) and `GET /healthz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::{self, Metrics};
use crate::shutdown::Shutdown;

/// The routes, over `metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(healthz))
        .with_state(metrics)
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], metrics.encode())
}

/// Liveness and readiness: the process is up and serving. Standbys are healthy too (they are
/// ready to take the Lease); the chart probes both with this path.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Serves [`router`] on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    async fn get(metrics: Arc<Metrics>, path: &str) -> (StatusCode, Option<String>, String) {
        let response = router(metrics)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(bytes.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn serves_metrics_and_health() {
        let metrics = Arc::new(Metrics::new());
        metrics.set_pool_matching_nodes("cpu", 3);
        let (status, content_type, body) = get(metrics.clone(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some(metrics::CONTENT_TYPE));
        assert!(body.contains("ryzanstein_operator_pool_matching_nodes{pool=\"cpu\"} 3\n"));
        let (status, _, body) = get(metrics.clone(), "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
        let (status, _, _) = get(metrics, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
}
