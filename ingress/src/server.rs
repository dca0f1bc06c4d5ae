//! The listeners: plain HTTP and HTTPS (certificates by SNI; HTTP/2 by ALPN) into the
//! proxy, each request with the snapshot current when it arrives; and the healthz
//! port (`GET /healthz`: 200 `ok` once the watches have synced; `GET /metrics`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::metrics::Metrics;
use crate::proxy::{Connection, Proxy, Scheme};
use crate::snapshot::Snapshot;

/// nginx's `client_header_timeout`.
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves one client connection until it closes.
async fn serve_connection<I>(
    io: I,
    connection: Connection,
    proxy: Arc<Proxy>,
    state: watch::Receiver<Arc<Snapshot>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let snapshot = state.borrow().clone();
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(&snapshot, &connection, request).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    if let Err(err) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(peer = %connection.peer, %err, "connection ended with an error");
    }
}

/// Accepts connections on `listener` until the task is dropped: plain HTTP, or TLS
/// through `acceptor`.
pub async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    proxy: Arc<Proxy>,
    state: watch::Receiver<Arc<Snapshot>>,
) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let scheme = if acceptor.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let connection = Connection {
            peer,
            local,
            scheme,
        };
        let (acceptor, proxy, state) = (acceptor.clone(), proxy.clone(), state.clone());
        connections.spawn(async move {
            match acceptor {
                None => serve_connection(stream, connection, proxy, state).await,
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => serve_connection(tls, connection, proxy, state).await,
                    Err(err) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                },
            }
        });
        while connections.try_join_next().is_some() {}
    }
}

/// The healthz port: `GET /healthz`, 200 `ok` once the first snapshot of the cluster
/// is served, and `GET /metrics`.
pub fn status_port(state: watch::Receiver<Arc<Snapshot>>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(move || {
                let synced = state.borrow().synced;
                async move {
                    if synced {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::INTERNAL_SERVER_ERROR, "not synced")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = metrics.render();
                async move { ([("content-type", "text/plain; version=0.0.4")], text) }
            }),
        )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::tls;

    #[tokio::test]
    async fn healthz_is_ok_once_synced_and_metrics_are_served() {
        let fake = Arc::new(tls::fake_certificate().unwrap());
        let (tx, rx) = watch::channel(Arc::new(Snapshot::empty(fake.clone())));
        let metrics = Arc::new(Metrics::default());
        let get = |path: &'static str| {
            let router = status_port(rx.clone(), metrics.clone());
            async move {
                let response = router
                    .oneshot(Request::get(path).body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        assert_eq!(
            get("/healthz").await,
            (StatusCode::INTERNAL_SERVER_ERROR, "not synced".into())
        );
        let synced = Snapshot::build(&Default::default(), &Default::default(), &fake, None);
        tx.send_replace(Arc::new(synced));
        metrics.reloaded();
        assert_eq!(get("/healthz").await, (StatusCode::OK, "ok".into()));
        let (status, text) = get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("nginx_ingress_controller_success 1\n"),
            "{text}"
        );
    }
}
