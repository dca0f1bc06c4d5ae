//! CoreDNS's HTTP endpoints: `/health` (the `health` plugin, "OK" while the process
//! serves), `/ready` (the `ready` plugin, 200 once the kubernetes plugin has synced,
//! 503 naming it before) and `/metrics` (the `prometheus` plugin).

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::server::State;

pub fn health() -> Router {
    Router::new().route("/health", get(|| async { "OK" }))
}

pub fn ready(state: watch::Receiver<State>) -> Router {
    Router::new()
        .route(
            "/ready",
            get(
                |AxumState(state): AxumState<watch::Receiver<State>>| async move {
                    if state.borrow().snapshot.is_some() {
                        (StatusCode::OK, "OK")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "kubernetes")
                    }
                },
            ),
        )
        .with_state(state)
}

pub fn metrics(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|AxumState(m): AxumState<Arc<Metrics>>| async move {
                ([("content-type", "text/plain; version=0.0.4")], m.render())
            }),
        )
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_is_ok_and_ready_waits_for_the_first_sync() {
        assert_eq!(
            get(health(), "/health").await,
            (StatusCode::OK, "OK".into())
        );
        let (tx, rx) = watch::channel(State::default());
        assert_eq!(
            get(ready(rx.clone()), "/ready").await,
            (StatusCode::SERVICE_UNAVAILABLE, "kubernetes".into())
        );
        tx.send_modify(|s| s.snapshot = Some(Arc::new(Snapshot::default())));
        assert_eq!(
            get(ready(rx), "/ready").await,
            (StatusCode::OK, "OK".into())
        );
    }
}
