//! kube-proxy's service health checks: for every Service with
//! `externalTrafficPolicy: Local` and a `healthCheckNodePort`, an HTTP server on that
//! port of the node answering 200 while the node has a ready endpoint of the Service
//! (and the proxy is healthy), 503 otherwise, so a load balancer sends traffic only to
//! nodes that keep it local.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use tokio::task::JoinHandle;

use crate::model;
use crate::server::Status;

/// What one health check port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub namespace: String,
    pub name: String,
    /// Ready endpoints on this node, summed over the Service's ports as kube-proxy
    /// counts them.
    pub local_endpoints: usize,
}

/// The health check ports of `state` on `node`, with what each reports.
pub fn checks(state: &model::State, node: &str) -> BTreeMap<u16, Check> {
    let mut out: BTreeMap<u16, Check> = BTreeMap::new();
    let mut local: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (name, (_, endpoints)) in state {
        *local.entry((&name.namespace, &name.name)).or_default() += endpoints
            .iter()
            .filter(|e| e.ready && e.node.as_deref() == Some(node))
            .count();
    }
    for (name, (port, _)) in state {
        if let Some(health) = port.health_check_node_port {
            out.insert(
                health,
                Check {
                    namespace: name.namespace.clone(),
                    name: name.name.clone(),
                    local_endpoints: local[&(name.namespace.as_str(), name.name.as_str())],
                },
            );
        }
    }
    out
}

/// The response to a health check, as kube-proxy writes it.
pub fn response(check: &Check, proxy_healthy: bool) -> (StatusCode, String) {
    let code = if check.local_endpoints > 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        check.namespace, check.name, check.local_endpoints
    );
    (code, body)
}

type Shared = Arc<Mutex<BTreeMap<u16, Check>>>;

/// The health check servers of one node: one listener per port, opened and closed
/// as Services come and go.
pub struct Servers {
    checks: Shared,
    listeners: BTreeMap<u16, JoinHandle<()>>,
    status: Arc<Status>,
}

impl Servers {
    pub fn new(status: Arc<Status>) -> Servers {
        Servers {
            checks: Arc::default(),
            listeners: BTreeMap::new(),
            status,
        }
    }

    /// Serves the checks of `state` on `node`, after a sync.
    pub async fn sync(&mut self, state: &model::State, node: &str) {
        let wanted = checks(state, node);
        self.listeners.retain(|port, task| {
            let keep = wanted.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for port in wanted.keys() {
            if self.listeners.contains_key(port) {
                continue;
            }
            let address = SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port));
            match tokio::net::TcpListener::bind(address).await {
                Ok(listener) => {
                    let app = Router::new().fallback(answer).with_state((
                        self.checks.clone(),
                        self.status.clone(),
                        *port,
                    ));
                    let task = tokio::spawn(async move {
                        if let Err(err) = axum::serve(listener, app).await {
                            tracing::warn!(%err, %address, "serving a health check");
                        }
                    });
                    self.listeners.insert(*port, task);
                }
                Err(err) => {
                    tracing::warn!(%err, port, "Failed to start healthcheck");
                }
            }
        }
        *self.checks.lock().unwrap_or_else(PoisonError::into_inner) = wanted;
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for task in self.listeners.values() {
            task.abort();
        }
    }
}

async fn answer(
    State((checks, status, port)): State<(Shared, Arc<Status>, u16)>,
) -> impl IntoResponse {
    let check = checks
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&port)
        .cloned();
    let Some(check) = check else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("x-load-balancing-endpoint-weight", "0".to_owned())],
            String::new(),
        )
            .into_response();
    };
    let (code, body) = response(&check, status.healthy(SystemTime::now()));
    (
        code,
        [
            ("content-type", "application/json".to_owned()),
            ("x-content-type-options", "nosniff".to_owned()),
            (
                "x-load-balancing-endpoint-weight",
                check.local_endpoints.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Protocol, ServicePort, ServicePortName};

    fn port(name: &str, number: u16, health: Option<u16>) -> ServicePort {
        ServicePort {
            name: ServicePortName {
                namespace: "default".into(),
                name: "web".into(),
                port: name.into(),
            },
            protocol: Protocol::Tcp,
            cluster_ip: Ipv4Addr::new(10, 96, 0, 20),
            port: number,
            node_port: Some(30000 + number),
            external_ips: Vec::new(),
            load_balancer_ips: vec![Ipv4Addr::new(192, 168, 1, 200)],
            affinity_seconds: None,
            external_policy_local: true,
            internal_policy_local: false,
            health_check_node_port: health,
            source_ranges: Vec::new(),
        }
    }

    fn endpoint(ip: [u8; 4], node: &str, ready: bool) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::from(ip),
            port: 80,
            ready,
            serving: ready,
            terminating: false,
            node: Some(node.into()),
        }
    }

    #[test]
    fn local_ready_endpoints_are_counted_over_the_service_ports() {
        let endpoints = vec![
            endpoint([10, 244, 1, 2], "node1", true),
            endpoint([10, 244, 1, 3], "node1", false),
            endpoint([10, 244, 2, 2], "node2", true),
        ];
        let mut state = model::State::new();
        for (name, number) in [("http", 80), ("https", 443)] {
            let p = port(name, number, Some(32000));
            state.insert(p.name.clone(), (p, endpoints.clone()));
        }
        let node1 = checks(&state, "node1");
        assert_eq!(node1.len(), 1);
        assert_eq!(node1[&32000].local_endpoints, 2);
        assert_eq!(checks(&state, "node3")[&32000].local_endpoints, 0);
    }

    #[test]
    fn answers_200_with_local_endpoints_and_503_without() {
        let mut check = Check {
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints: 1,
        };
        let (code, body) = response(&check, true);
        assert_eq!(code, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["service"]["name"], "web");
        assert_eq!(json["localEndpoints"], 1);
        assert_eq!(json["serviceProxyHealthy"], true);
        assert_eq!(response(&check, false).0, StatusCode::SERVICE_UNAVAILABLE);
        check.local_endpoints = 0;
        assert_eq!(response(&check, true).0, StatusCode::SERVICE_UNAVAILABLE);
    }
}
