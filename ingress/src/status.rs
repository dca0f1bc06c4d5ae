//! The served Ingresses' `status.loadBalancer.ingress`: the addresses of the
//! `--publish-service` Service as ingress-nginx reads them (its load balancer's
//! ingress IPs and host names plus its external IPs for type LoadBalancer; its
//! external IPs, else its ClusterIP, for NodePort; its ClusterIP for ClusterIP; its
//! external name for ExternalName), or the `--publish-status-address` list. An
//! Ingress is written only when its status differs, and again after a minute if a
//! write failed or someone else changed it back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use tokio::sync::watch;

use crate::snapshot::Snapshot;
use crate::Key;

/// How long after a failed write the status is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How often the status is checked without a change, as ingress-nginx's status sync.
const RESYNC: Duration = Duration::from_secs(60);

fn ip(ip: &str) -> IngressLoadBalancerIngress {
    IngressLoadBalancerIngress {
        ip: Some(ip.to_string()),
        ..IngressLoadBalancerIngress::default()
    }
}

fn hostname(name: &str) -> IngressLoadBalancerIngress {
    IngressLoadBalancerIngress {
        hostname: Some(name.to_string()),
        ..IngressLoadBalancerIngress::default()
    }
}

fn sorted(mut addresses: Vec<IngressLoadBalancerIngress>) -> Vec<IngressLoadBalancerIngress> {
    addresses.retain(|a| {
        a.ip.as_deref().is_some_and(|s| !s.is_empty())
            || a.hostname.as_deref().is_some_and(|s| !s.is_empty())
    });
    addresses.sort_by(|a, b| (&a.ip, &a.hostname).cmp(&(&b.ip, &b.hostname)));
    addresses.dedup();
    addresses
}

/// `--publish-status-address`: IPs as `ip`, anything else as `hostname`.
pub fn from_addresses(addresses: &[String]) -> Vec<IngressLoadBalancerIngress> {
    sorted(
        addresses
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .map(|a| match a.parse::<IpAddr>() {
                Ok(_) => ip(a),
                Err(_) => hostname(a),
            })
            .collect(),
    )
}

/// The addresses of the `--publish-service` Service.
pub fn from_service(service: &Service) -> Vec<IngressLoadBalancerIngress> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let cluster_ip = || {
        spec.cluster_ip
            .iter()
            .filter(|c| c.as_str() != "None")
            .map(|c| ip(c))
            .collect::<Vec<_>>()
    };
    let external_ips = spec.external_ips.clone().unwrap_or_default();
    let addresses = match spec.type_.as_deref().unwrap_or("ClusterIP") {
        "ExternalName" => spec.external_name.iter().map(|n| hostname(n)).collect(),
        "NodePort" if external_ips.is_empty() => cluster_ip(),
        "NodePort" => external_ips.iter().map(|a| ip(a)).collect(),
        "LoadBalancer" => {
            let balancer = service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref());
            balancer
                .into_iter()
                .flatten()
                .map(|lb| match lb.ip.as_deref().filter(|i| !i.is_empty()) {
                    Some(address) => ip(address),
                    None => hostname(lb.hostname.as_deref().unwrap_or_default()),
                })
                .chain(external_ips.iter().map(|a| ip(a)))
                .collect()
        }
        _ => cluster_ip(),
    };
    sorted(addresses)
}

/// The served Ingresses whose status differs from what the snapshot publishes, with
/// the status they should have.
pub fn updates(snapshot: &Snapshot) -> Vec<(Key, Vec<IngressLoadBalancerIngress>)> {
    let Some(desired) = &snapshot.status else {
        return Vec::new();
    };
    snapshot
        .served
        .iter()
        .filter(|served| sorted(served.status.clone()) != *desired)
        .map(|served| (served.key.clone(), desired.clone()))
        .collect()
}

/// Keeps the served Ingresses' status current until the snapshot sender is dropped.
pub async fn run(client: Client, mut state: watch::Receiver<Arc<Snapshot>>) {
    // What was written last per Ingress, and the resourceVersion it was written over:
    // until the watch shows a newer version, the same write is not repeated.
    let mut written: HashMap<Key, (Option<String>, Vec<IngressLoadBalancerIngress>)> =
        HashMap::new();
    loop {
        let snapshot = state.borrow_and_update().clone();
        let mut failed = false;
        if snapshot.synced {
            for (key, desired) in updates(&snapshot) {
                let seen = snapshot
                    .served
                    .iter()
                    .find(|s| s.key == key)
                    .and_then(|s| s.resource_version.clone());
                if written.get(&key) == Some(&(seen.clone(), desired.clone())) {
                    continue;
                }
                let api = Api::<Ingress>::namespaced(client.clone(), &key.namespace);
                let ingress = if desired.is_empty() {
                    serde_json::Value::Null
                } else {
                    json!(desired)
                };
                let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
                match api
                    .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => {
                        tracing::info!(ingress = %key, status = %serde_json::to_string(&desired).unwrap_or_default(), "updated status");
                        written.insert(key, (seen, desired));
                    }
                    Err(err) => {
                        tracing::warn!(ingress = %key, %err, "updating status");
                        failed = true;
                    }
                }
            }
        }
        let wait = if failed { RETRY } else { RESYNC };
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(wait) => written.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn service(v: Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn addresses(list: &[IngressLoadBalancerIngress]) -> Vec<String> {
        list.iter()
            .map(|a| match (&a.ip, &a.hostname) {
                (Some(ip), _) => format!("ip:{ip}"),
                (None, Some(h)) => format!("hostname:{h}"),
                _ => String::new(),
            })
            .collect()
    }

    #[track_caller]
    fn check(svc: Value, expected: &[&str]) {
        assert_eq!(addresses(&from_service(&service(svc))), expected);
    }

    #[test]
    fn service_addresses_by_type_as_ingress_nginx_reads_them() {
        check(
            json!({"spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20"}}),
            &["ip:10.96.0.20"],
        );
        check(
            json!({"spec": {"clusterIP": "10.96.0.21"}}),
            &["ip:10.96.0.21"],
        );
        check(json!({"spec": {"clusterIP": "None"}}), &[]);
        check(
            json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.22"}}),
            &["ip:10.96.0.22"],
        );
        check(
            json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.22",
                            "externalIPs": ["192.168.1.50", "192.168.1.40"]}}),
            &["ip:192.168.1.40", "ip:192.168.1.50"],
        );
        check(
            json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.23",
                            "externalIPs": ["192.168.1.60"]},
                   "status": {"loadBalancer": {"ingress": [
                       {"ip": "203.0.113.7"}, {"hostname": "lb.example.com"}]}}}),
            &[
                "hostname:lb.example.com",
                "ip:192.168.1.60",
                "ip:203.0.113.7",
            ],
        );
        check(
            json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.23"}}),
            &[],
        );
        check(
            json!({"spec": {"type": "ExternalName", "externalName": "ingress.example.com"}}),
            &["hostname:ingress.example.com"],
        );
    }

    #[test]
    fn status_addresses_are_ips_or_host_names() {
        assert_eq!(
            addresses(&from_addresses(&[
                "localhost".into(),
                "127.0.0.1".into(),
                " ".into(),
                "::1".into(),
            ])),
            ["hostname:localhost", "ip:127.0.0.1", "ip:::1"]
        );
    }
}
