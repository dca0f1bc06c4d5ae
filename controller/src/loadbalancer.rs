//! The load-balancer controller, as MetalLB's controller does it in layer-2 mode: every
//! Service of `type: LoadBalancer` that is ours (no `spec.loadBalancerClass`, or the
//! class this controller was started for) gets an address from the pool, written to
//! `status.loadBalancer.ingress`; a requested `spec.loadBalancerIP` is honoured when
//! the pool holds it and no other Service has it. A Service that stops being a
//! LoadBalancer loses its address, and a deleted one frees it: the next Service
//! asking gets the lowest free address. Which node answers ARP for an address is the
//! speakers' business (`kubelet::speaker`), not this controller's.
//!
//! The addresses in use are read back from the Services' statuses at every pass, so
//! a restarted controller keeps every assignment it made.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::events::Recorder;
use crate::runtime::watched_store;

/// The pool MetalLB's layer-2 examples (and kubesim's underlay) use.
pub const DEFAULT_POOL: &str = "192.168.1.200-192.168.1.250";
const FIELD_MANAGER: &str = "service-lb-controller";

/// Address ranges, `192.168.1.200-192.168.1.250` or `192.168.1.240/28`, several
/// separated by commas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    ranges: Vec<(u32, u32)>,
}

impl Pool {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        self.ranges
            .iter()
            .any(|(from, to)| (*from..=*to).contains(&ip))
    }

    fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.ranges
            .iter()
            .flat_map(|(from, to)| (*from..=*to).map(Ipv4Addr::from))
    }
}

impl FromStr for Pool {
    type Err = String;

    fn from_str(text: &str) -> Result<Pool, String> {
        let invalid = |part: &str| {
            format!("invalid address pool {part:?}: want FIRST-LAST (192.168.1.200-192.168.1.250) or a CIDR (192.168.1.240/28)")
        };
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let range = if let Some((from, to)) = part.split_once('-') {
                let from: Ipv4Addr = from.trim().parse().map_err(|_| invalid(part))?;
                let to: Ipv4Addr = to.trim().parse().map_err(|_| invalid(part))?;
                (u32::from(from), u32::from(to))
            } else {
                let (ip, prefix) = part.split_once('/').ok_or_else(|| invalid(part))?;
                let ip: Ipv4Addr = ip.parse().map_err(|_| invalid(part))?;
                let prefix: u32 = prefix
                    .parse()
                    .ok()
                    .filter(|p| *p <= 32)
                    .ok_or_else(|| invalid(part))?;
                let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
                let base = u32::from(ip) & mask;
                (base, base | !mask)
            };
            if range.0 > range.1 {
                return Err(invalid(part));
            }
            ranges.push(range);
        }
        if ranges.is_empty() {
            return Err(invalid(text));
        }
        Ok(Pool { ranges })
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|(from, to)| format!("{}-{}", Ipv4Addr::from(*from), Ipv4Addr::from(*to)))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A Service, by namespace and name.
pub type Key = (String, String);

/// What a pass does to one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write this address as its ingress.
    Assign(Ipv4Addr),
    /// Clear its ingress: it is no longer a LoadBalancer.
    Release,
    /// It wants an address and cannot have one; the reason, as MetalLB reports it.
    Fail(String),
}

/// Whether `service` is a LoadBalancer this controller serves.
pub fn is_ours(service: &Service, class: Option<&str>) -> bool {
    let Some(spec) = service.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.as_deref() == class
}

/// The IPv4 ingress addresses of a Service's status.
pub fn ingress_ips(service: &Service) -> Vec<Ipv4Addr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

fn requested(service: &Service) -> Option<&str> {
    service
        .spec
        .as_ref()?
        .load_balancer_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
}

fn key(service: &Service) -> Key {
    (service.namespace().unwrap_or_default(), service.name_any())
}

/// The changes that bring `services` to their addresses from `pool`. Services keep
/// the address they have while it is valid (in the pool, what they request, not
/// another's); the oldest Service wins a contested address. Pure.
pub fn plan(services: &[Service], pool: &Pool, class: Option<&str>) -> BTreeMap<Key, Change> {
    let mut ours: Vec<&Service> = services.iter().filter(|s| is_ours(s, class)).collect();
    ours.sort_by(|a, b| {
        let created = |s: &Service| s.metadata.creation_timestamp.clone().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| key(a).cmp(&key(b)))
    });
    let mut changes = BTreeMap::new();
    for service in services {
        if service.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("LoadBalancer")
            && !ingress_ips(service).is_empty()
        {
            changes.insert(key(service), Change::Release);
        }
    }
    let mut used: HashMap<Ipv4Addr, Key> = HashMap::new();
    let mut needing: Vec<&Service> = Vec::new();
    for service in &ours {
        let current = ingress_ips(service);
        let valid = match current.as_slice() {
            [ip] => {
                pool.contains(*ip)
                    && !used.contains_key(ip)
                    && requested(service).is_none_or(|r| r == ip.to_string())
            }
            _ => false,
        };
        if valid {
            used.insert(current[0], key(service));
        } else {
            needing.push(service);
        }
    }
    for service in needing {
        let change = match requested(service) {
            Some(text) => match text.parse::<Ipv4Addr>() {
                Err(_) => Change::Fail(format!("{text:?} is not a valid IPv4 address")),
                Ok(ip) if !pool.contains(ip) => {
                    Change::Fail(format!("\"{ip}\" is not allowed in config (pool {pool})"))
                }
                Ok(ip) => match used.get(&ip) {
                    Some((ns, name)) => {
                        Change::Fail(format!("\"{ip}\" is already in use by {ns}/{name}"))
                    }
                    None => Change::Assign(ip),
                },
            },
            None => match pool.addresses().find(|ip| !used.contains_key(ip)) {
                Some(ip) => Change::Assign(ip),
                None => Change::Fail(format!("no available IPs in pool {pool}")),
            },
        };
        if let Change::Assign(ip) = change {
            used.insert(ip, key(service));
        }
        changes.insert(key(service), change);
    }
    changes
}

/// Assigns and releases load-balancer addresses until the watch ends.
pub async fn run(client: Client, pool: Pool, class: Option<String>) -> anyhow::Result<()> {
    let changed = Arc::new(Notify::new());
    let notify = changed.clone();
    let store = watched_store::<Service>(client.clone(), move || notify.notify_one());
    store.wait_until_ready().await?;
    tracing::info!(%pool, class = class.as_deref().unwrap_or("<none>"), "load-balancer controller started");
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    // What this controller wrote and the store may not show yet (uid → ingress).
    let mut written: HashMap<String, Option<Ipv4Addr>> = HashMap::new();
    let mut reported: HashMap<Key, String> = HashMap::new();
    let events = Recorder::new(client.clone(), FIELD_MANAGER);
    loop {
        let mut services: Vec<Service> = store.state().iter().map(|s| (**s).clone()).collect();
        for service in &mut services {
            let uid = service.uid().unwrap_or_default();
            let Some(ip) = written.get(&uid) else {
                continue;
            };
            let shown = ingress_ips(service);
            if shown.as_slice() == ip.as_slice() {
                written.remove(&uid);
            } else {
                let ingress = ip.map(|ip| vec![json!({"ip": ip.to_string(), "ipMode": "VIP"})]);
                let status = service.status.get_or_insert_with(Default::default);
                status.load_balancer = Some(serde_json::from_value(
                    json!({ "ingress": ingress.unwrap_or_default() }),
                )?);
            }
        }
        let by_key: HashMap<Key, &Service> = services.iter().map(|s| (key(s), s)).collect();
        let mut retry = false;
        for ((namespace, name), change) in plan(&services, &pool, class.as_deref()) {
            let api: Api<Service> = Api::namespaced(client.clone(), &namespace);
            let (patch, ip) = match &change {
                Change::Assign(ip) => (
                    json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}}),
                    Some(*ip),
                ),
                Change::Release => (json!({"status": {"loadBalancer": {"ingress": null}}}), None),
                Change::Fail(reason) => {
                    let service = (namespace.clone(), name.clone());
                    if reported.get(&service) != Some(reason) {
                        let message =
                            format!("Failed to allocate IP for \"{namespace}/{name}\": {reason}");
                        tracing::warn!("{message}");
                        if let Some(svc) = by_key.get(&service) {
                            events.record(
                                *svc,
                                "Warning",
                                "AllocationFailed",
                                "Allocate",
                                &message,
                            );
                        }
                        reported.insert(service, reason.clone());
                    }
                    continue;
                }
            };
            match api
                .patch_status(&name, &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    reported.remove(&(namespace.clone(), name.clone()));
                    let service = by_key.get(&(namespace.clone(), name.clone()));
                    match ip {
                        Some(ip) => {
                            tracing::info!(service = %format!("{namespace}/{name}"), %ip, "IPAllocated");
                            let message = format!("Assigned IP [\"{ip}\"]");
                            if let Some(svc) = service {
                                events.record(*svc, "Normal", "IPAllocated", "Allocate", &message);
                            }
                        }
                        None => {
                            tracing::info!(service = %format!("{namespace}/{name}"), "released load-balancer address")
                        }
                    }
                    if let Some(uid) = service.and_then(|s| s.uid()) {
                        written.insert(uid, ip);
                    }
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(err) => {
                    tracing::warn!(%err, service = %format!("{namespace}/{name}"), "writing load-balancer status");
                    retry = true;
                }
            }
        }
        let live: BTreeSet<String> = services.iter().filter_map(|s| s.uid()).collect();
        written.retain(|uid, _| live.contains(uid));
        let wait = if retry || !written.is_empty() {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(30)
        };
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, type_: &str, created: i64, status_ip: Option<&str>) -> Service {
        serde_json::from_value(json!({
            "metadata": {
                "name": name,
                "namespace": "default",
                "uid": format!("uid-{name}"),
                "creationTimestamp": format!("2026-11-25T00:00:{created:02}Z"),
            },
            "spec": {"type": type_, "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": status_ip.map(|ip| vec![json!({"ip": ip})])}},
        }))
        .expect("service")
    }

    fn pool() -> Pool {
        "192.168.1.200-192.168.1.202".parse().expect("pool")
    }

    fn k(name: &str) -> Key {
        ("default".into(), name.into())
    }

    #[test]
    fn pools_parse_ranges_and_cidrs() {
        let pool: Pool = "192.168.1.200-192.168.1.250, 10.0.0.8/30"
            .parse()
            .expect("pool");
        assert!(pool.contains("192.168.1.250".parse().expect("ip")));
        assert!(!pool.contains("192.168.1.251".parse().expect("ip")));
        assert!(pool.contains("10.0.0.11".parse().expect("ip")));
        assert_eq!(
            pool.to_string(),
            "192.168.1.200-192.168.1.250,10.0.0.8-10.0.0.11"
        );
        assert!("192.168.1.9-192.168.1.1".parse::<Pool>().is_err());
        assert!("banana".parse::<Pool>().unwrap_err().contains("\"banana\""));
    }

    #[test]
    fn lowest_free_addresses_go_out_in_creation_order() {
        let services = vec![
            service("b", "LoadBalancer", 2, None),
            service("a", "LoadBalancer", 1, None),
            service("c", "ClusterIP", 0, None),
        ];
        let changes = plan(&services, &pool(), None);
        assert_eq!(
            changes[&k("a")],
            Change::Assign("192.168.1.200".parse().expect("ip"))
        );
        assert_eq!(
            changes[&k("b")],
            Change::Assign("192.168.1.201".parse().expect("ip"))
        );
        assert!(!changes.contains_key(&k("c")));
    }

    #[test]
    fn assigned_addresses_stay_and_freed_ones_are_reused() {
        let services = vec![
            service("a", "LoadBalancer", 1, Some("192.168.1.201")),
            service("b", "LoadBalancer", 2, None),
        ];
        let changes = plan(&services, &pool(), None);
        assert!(!changes.contains_key(&k("a")), "a keeps its address");
        assert_eq!(
            changes[&k("b")],
            Change::Assign("192.168.1.200".parse().expect("ip"))
        );
    }

    #[test]
    fn a_service_that_is_no_longer_a_load_balancer_is_released() {
        let services = vec![service("a", "ClusterIP", 1, Some("192.168.1.200"))];
        assert_eq!(plan(&services, &pool(), None)[&k("a")], Change::Release);
    }

    #[test]
    fn requested_addresses_are_honoured_or_refused() {
        let mut wants = service("a", "LoadBalancer", 1, None);
        wants.spec.as_mut().expect("spec").load_balancer_ip = Some("192.168.1.202".into());
        let mut outside = service("b", "LoadBalancer", 2, None);
        outside.spec.as_mut().expect("spec").load_balancer_ip = Some("10.1.2.3".into());
        let mut taken = service("c", "LoadBalancer", 3, None);
        taken.spec.as_mut().expect("spec").load_balancer_ip = Some("192.168.1.202".into());
        let changes = plan(&[wants, outside, taken], &pool(), None);
        assert_eq!(
            changes[&k("a")],
            Change::Assign("192.168.1.202".parse().expect("ip"))
        );
        assert_eq!(
            changes[&k("b")],
            Change::Fail(
                "\"10.1.2.3\" is not allowed in config (pool 192.168.1.200-192.168.1.202)".into()
            )
        );
        assert_eq!(
            changes[&k("c")],
            Change::Fail("\"192.168.1.202\" is already in use by default/a".into())
        );
    }

    #[test]
    fn a_contested_address_goes_to_the_oldest_and_an_empty_pool_fails() {
        let services = vec![
            service("new", "LoadBalancer", 5, Some("192.168.1.200")),
            service("old", "LoadBalancer", 1, Some("192.168.1.200")),
            service("x", "LoadBalancer", 2, Some("192.168.1.201")),
            service("y", "LoadBalancer", 3, Some("192.168.1.202")),
        ];
        let changes = plan(&services, &pool(), None);
        assert!(!changes.contains_key(&k("old")));
        assert_eq!(
            changes[&k("new")],
            Change::Fail("no available IPs in pool 192.168.1.200-192.168.1.202".into())
        );
    }

    #[test]
    fn other_classes_are_left_to_their_controller() {
        let mut other = service("a", "LoadBalancer", 1, None);
        other.spec.as_mut().expect("spec").load_balancer_class = Some("example.com/lb".into());
        assert!(plan(std::slice::from_ref(&other), &pool(), None).is_empty());
        let changes = plan(&[other], &pool(), Some("example.com/lb"));
        assert_eq!(
            changes[&k("a")],
            Change::Assign("192.168.1.200".parse().expect("ip"))
        );
    }
}
