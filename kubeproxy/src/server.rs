//! kube-proxy's two HTTP endpoints: `/healthz` on the health port (10256) with the
//! JSON kube-proxy answers, and `/metrics` plus `/proxyMode` on the metrics port
//! (10249) in the Prometheus text format.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use k8s_openapi::jiff::Timestamp;

use crate::proxier::SyncKind;

/// Upper bounds of the sync duration histogram, in seconds (kube-proxy's buckets:
/// exponential from 1ms, doubling, 15 buckets).
fn buckets() -> Vec<f64> {
    (0..15).map(|i| 0.001 * f64::powi(2.0, i)).collect()
}

#[derive(Debug, Default)]
struct Inner {
    last_updated: Option<SystemTime>,
    /// When the oldest change not yet synced arrived.
    pending_since: Option<SystemTime>,
    durations: Vec<f64>,
    programming: Vec<f64>,
    full_syncs: u64,
    partial_syncs: u64,
}

/// What the endpoints report, updated by the sync loop.
#[derive(Debug)]
pub struct Status {
    mode: &'static str,
    /// A sync is overdue (unhealthy) when a change waited longer than this.
    health_timeout: Duration,
    inner: Mutex<Inner>,
}

impl Status {
    pub fn new(mode: &'static str, health_timeout: Duration) -> Status {
        Status {
            mode,
            health_timeout,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A change arrived that the next sync will apply.
    pub fn pending(&self) {
        let mut inner = self.lock();
        inner.pending_since.get_or_insert_with(SystemTime::now);
    }

    /// A sync finished after `took`.
    pub fn synced(&self, took: Duration, kind: SyncKind) {
        let now = SystemTime::now();
        let mut inner = self.lock();
        inner.durations.push(took.as_secs_f64());
        if let Some(since) = inner.pending_since.take() {
            let waited = now.duration_since(since).unwrap_or_default();
            inner.programming.push(waited.as_secs_f64());
        }
        match kind {
            SyncKind::Full => inner.full_syncs += 1,
            SyncKind::Partial => inner.partial_syncs += 1,
        }
        inner.last_updated = Some(now);
    }

    /// Healthy once synced, and no change has waited longer than the timeout.
    pub(crate) fn healthy(&self, now: SystemTime) -> bool {
        let inner = self.lock();
        let overdue = inner.pending_since.is_some_and(|since| {
            now.duration_since(since).unwrap_or_default() > self.health_timeout
        });
        inner.last_updated.is_some() && !overdue
    }

    fn metrics(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        histogram(
            &mut out,
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            &inner.durations,
        );
        histogram(
            &mut out,
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            &inner.programming,
        );
        let last = inner
            .last_updated
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        out.push_str("# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds The last time proxy rules were successfully synced\n");
        out.push_str("# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge\n");
        out.push_str(&format!(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds {last}\n"
        ));
        out.push_str("# HELP kubeproxy_sync_full_proxy_rules_total Number of full syncs\n");
        out.push_str("# TYPE kubeproxy_sync_full_proxy_rules_total counter\n");
        out.push_str(&format!(
            "kubeproxy_sync_full_proxy_rules_total {}\n",
            inner.full_syncs
        ));
        out.push_str("# HELP kubeproxy_sync_partial_proxy_rules_total Number of partial syncs\n");
        out.push_str("# TYPE kubeproxy_sync_partial_proxy_rules_total counter\n");
        out.push_str(&format!(
            "kubeproxy_sync_partial_proxy_rules_total {}\n",
            inner.partial_syncs
        ));
        out
    }
}

fn histogram(out: &mut String, name: &str, help: &str, values: &[f64]) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
    for bound in buckets() {
        let count = values.iter().filter(|v| **v <= bound).count();
        out.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {count}\n"));
    }
    out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {}\n", values.len()));
    out.push_str(&format!("{name}_sum {}\n", values.iter().sum::<f64>()));
    out.push_str(&format!("{name}_count {}\n", values.len()));
}

fn rfc3339(t: Option<SystemTime>) -> String {
    t.and_then(|t| Timestamp::try_from(t).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

async fn healthz(State(status): State<Arc<Status>>) -> impl IntoResponse {
    let now = SystemTime::now();
    let healthy = status.healthy(now);
    let last = status.lock().last_updated;
    let body = serde_json::json!({
        "lastUpdated": rfc3339(last),
        "currentTime": rfc3339(Some(now)),
        "nodeEligible": true,
    });
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
}

/// Serves `/healthz` on `health` and `/metrics`, `/proxyMode` on `metrics`.
pub async fn serve(
    health: SocketAddr,
    metrics: SocketAddr,
    status: Arc<Status>,
) -> std::io::Result<()> {
    let health_app = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .with_state(status.clone());
    let metrics_app = Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Arc<Status>>| async move { s.metrics() }),
        )
        .route(
            "/proxyMode",
            get(|State(s): State<Arc<Status>>| async move { s.mode }),
        )
        .route("/healthz", get(healthz))
        .with_state(status);
    let health_listener = tokio::net::TcpListener::bind(health).await?;
    let metrics_listener = tokio::net::TcpListener::bind(metrics).await?;
    tokio::try_join!(
        async { axum::serve(health_listener, health_app).await },
        async { axum::serve(metrics_listener, metrics_app).await },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_syncs_and_overdue_changes() {
        let status = Status::new("iptables", Duration::from_secs(60));
        let now = SystemTime::now();
        assert!(!status.healthy(now), "not healthy before the first sync");
        status.synced(Duration::from_millis(3), SyncKind::Full);
        assert!(status.healthy(now));
        status.pending();
        assert!(status.healthy(SystemTime::now()));
        assert!(!status.healthy(SystemTime::now() + Duration::from_secs(61)));
    }

    #[test]
    fn metrics_are_prometheus_histograms() {
        let status = Status::new("iptables", Duration::from_secs(60));
        status.synced(Duration::from_millis(3), SyncKind::Full);
        let text = status.metrics();
        assert!(text.contains("# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram\n"));
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1\n")
        );
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.002\"} 0\n")
        );
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_count 1\n"));
        assert!(text.contains("kubeproxy_sync_full_proxy_rules_total 1\n"));
    }
}
