//! The cluster as the kubernetes plugin indexes it: namespaces, Services by
//! `namespace/name` with their EndpointSlices folded into subsets (ready addresses
//! only, as CoreDNS converts slices), and reverse indexes from ClusterIPs and
//! endpoint addresses to their Services.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming the Service of an EndpointSlice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A port of a Service or of an EndpointSlice; `port: None` is CoreDNS's sentinel for
/// a slice without ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    /// Lower case: `tcp`, `udp`, `sctp`.
    pub protocol: String,
    pub port: Option<u16>,
}

/// One ready address of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub ip: IpAddr,
    pub hostname: Option<String>,
}

impl Address {
    /// The endpoint's label in DNS names: its hostname, else its IP with dashes.
    pub fn label(&self) -> String {
        match &self.hostname {
            Some(h) if !h.is_empty() => h.clone(),
            _ => self.ip.to_string().replace(['.', ':'], "-"),
        }
    }
}

/// The addresses and ports of one EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    pub addresses: Vec<Address>,
    pub ports: Vec<Port>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    ExternalName(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub kind: Kind,
    pub ports: Vec<Port>,
    pub subsets: Vec<Subset>,
}

/// Everything an answer needs, immutable once built.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub namespaces: HashSet<String>,
    services: HashMap<(String, String), Service>,
    by_cluster_ip: HashMap<IpAddr, (String, String)>,
    by_endpoint_ip: HashMap<IpAddr, Vec<(String, String)>>,
    /// The SOA serial: when the data last changed, in Unix seconds.
    pub serial: u32,
}

impl Snapshot {
    pub fn build<'a>(
        namespaces: impl IntoIterator<Item = &'a Namespace>,
        services: impl IntoIterator<Item = &'a KubeService>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        serial: u32,
    ) -> Snapshot {
        let mut snapshot = Snapshot {
            namespaces: namespaces
                .into_iter()
                .filter_map(|n| n.metadata.name.clone())
                .collect(),
            serial,
            ..Snapshot::default()
        };
        for svc in services {
            if let Some(service) = service(svc) {
                let key = (service.namespace.clone(), service.name.clone());
                if let Kind::ClusterIp(ips) = &service.kind {
                    for ip in ips {
                        snapshot.by_cluster_ip.insert(*ip, key.clone());
                    }
                }
                snapshot.services.insert(key, service);
            }
        }
        for slice in slices {
            let Some(namespace) = slice.metadata.namespace.clone() else {
                continue;
            };
            let Some(name) = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let key = (namespace, name.clone());
            let Some(service) = snapshot.services.get_mut(&key) else {
                continue;
            };
            let subset = subset(slice);
            for address in &subset.addresses {
                let owners = snapshot.by_endpoint_ip.entry(address.ip).or_default();
                if !owners.contains(&key) {
                    owners.push(key.clone());
                }
            }
            service.subsets.push(subset);
        }
        for subsets in snapshot.services.values_mut().map(|s| &mut s.subsets) {
            subsets.sort_by_key(|s| s.addresses.iter().map(|a| a.ip).collect::<Vec<_>>());
        }
        snapshot
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// The Service whose ClusterIP is `ip`.
    pub fn service_for_cluster_ip(&self, ip: IpAddr) -> Option<&Service> {
        self.by_cluster_ip
            .get(&ip)
            .and_then(|(ns, name)| self.service(ns, name))
    }

    /// The Services with a ready endpoint at `ip`.
    pub fn services_for_endpoint_ip(&self, ip: IpAddr) -> impl Iterator<Item = &Service> {
        self.by_endpoint_ip
            .get(&ip)
            .into_iter()
            .flatten()
            .filter_map(|(ns, name)| self.service(ns, name))
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

fn protocol(p: Option<&String>) -> String {
    p.map_or("tcp".to_string(), |p| p.to_ascii_lowercase())
}

fn service(svc: &KubeService) -> Option<Service> {
    let spec = svc.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        Kind::ExternalName(spec.external_name.clone().unwrap_or_default())
    } else if spec.cluster_ip.as_deref() == Some("None") {
        Kind::Headless
    } else {
        let ips = spec
            .cluster_ips
            .clone()
            .filter(|ips| !ips.is_empty())
            .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
            .unwrap_or_default();
        Kind::ClusterIp(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
    };
    Some(Service {
        namespace: svc.metadata.namespace.clone()?,
        name: svc.metadata.name.clone()?,
        kind,
        ports: spec
            .ports
            .iter()
            .flatten()
            .map(|p| Port {
                name: p.name.clone().unwrap_or_default(),
                protocol: protocol(p.protocol.as_ref()),
                port: u16::try_from(p.port).ok(),
            })
            .collect(),
        subsets: Vec::new(),
    })
}

/// A slice as CoreDNS converts it: the addresses of endpoints whose `ready` condition
/// is true or unset, and the slice's ports (the `-1` sentinel when it has none).
fn subset(slice: &EndpointSlice) -> Subset {
    let addresses = slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| {
            e.addresses.iter().filter_map(|a| {
                Some(Address {
                    ip: a.parse().ok()?,
                    hostname: e.hostname.clone(),
                })
            })
        })
        .collect();
    let mut ports: Vec<Port> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| Port {
            name: p.name.clone().unwrap_or_default(),
            protocol: protocol(p.protocol.as_ref()),
            port: p.port.and_then(|p| u16::try_from(p).ok()),
        })
        .collect();
    if ports.is_empty() {
        ports.push(Port {
            name: String::new(),
            protocol: String::new(),
            port: None,
        });
    }
    Subset { addresses, ports }
}
