//! What the proxy needs of Services and EndpointSlices, read the way kube-proxy's
//! service and endpoint caches read them: one [`ServicePort`] per port of every
//! proxied Service, and its endpoints from the Service's slices.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that hands a Service to another proxy.
pub const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// The label that marks a Service headless for proxies.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The label naming the Service of an EndpointSlice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// `namespace/name:port` as kube-proxy prints a service port (`namespace/name` for an
/// unnamed port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    pub port: String,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}/{}", self.namespace, self.name)
        } else {
            write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// As iptables and the chain hashes spell it.
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of a proxied Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: ServicePortName,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    pub external_ips: Vec<Ipv4Addr>,
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `sessionAffinity: ClientIP` with this timeout in seconds.
    pub affinity_seconds: Option<i32>,
    pub external_policy_local: bool,
    pub internal_policy_local: bool,
    pub health_check_node_port: Option<u16>,
    /// `loadBalancerSourceRanges`: the only sources allowed to the load-balancer IPs
    /// (all when empty).
    pub source_ranges: Vec<Cidr>,
}

impl ServicePort {
    /// Whether traffic from outside reaches the port (NodePort, external or LB IPs).
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }

    /// Whether the port needs the endpoints of the whole cluster: for internal
    /// traffic under `Cluster`, or for any external traffic (pods and the node itself
    /// short-circuit to them even under `externalTrafficPolicy: Local`).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_policy_local || self.externally_accessible()
    }

    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_policy_local || (self.external_policy_local && self.externally_accessible())
    }
}

/// An IPv4 network, `192.168.1.0/24`, as a source range is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.network) & mask
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (ip, prefix) = text.split_once('/').unwrap_or((text, "32"));
        let network: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{text}: not an IPv4 CIDR"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{text}: not an IPv4 CIDR"))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(network) & mask),
            prefix,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// One endpoint of a service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub node: Option<String>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// The proxy's view of the cluster: every service port and its endpoints.
pub type State = BTreeMap<ServicePortName, (ServicePort, Vec<Endpoint>)>;

/// Builds the proxy's view from the Services and EndpointSlices it watches. Services
/// without a cluster IP (headless, ExternalName), IPv6 ones and those another proxy
/// owns are left out, as kube-proxy leaves them out.
pub fn build(services: &[Service], slices: &[EndpointSlice]) -> State {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let namespace = slice.metadata.namespace.clone().unwrap_or_default();
        by_service
            .entry((namespace, service.clone()))
            .or_default()
            .push(slice);
    }
    let mut state = State::new();
    for service in services {
        let labels = service.metadata.labels.as_ref();
        if labels
            .is_some_and(|l| l.contains_key(PROXY_NAME_LABEL) || l.contains_key(HEADLESS_LABEL))
        {
            continue;
        }
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let Some(cluster_ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let namespace = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let parse_ips = |ips: Option<&Vec<String>>| -> Vec<Ipv4Addr> {
            ips.into_iter()
                .flatten()
                .filter_map(|ip| ip.parse().ok())
                .collect()
        };
        let external_ips = parse_ips(spec.external_ips.as_ref());
        let load_balancer_ips: Vec<Ipv4Addr> = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(10_800)
        });
        let source_ranges: Vec<Cidr> = spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .filter_map(|text| text.trim().parse().ok())
            .collect();
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let own_slices = by_service
            .get(&(namespace.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for port in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                continue;
            };
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let port_name = port.name.clone().unwrap_or_default();
            let key = ServicePortName {
                namespace: namespace.clone(),
                name: name.clone(),
                port: port_name.clone(),
            };
            let info = ServicePort {
                name: key.clone(),
                protocol,
                cluster_ip,
                port: number,
                node_port: port
                    .node_port
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0),
                external_ips: external_ips.clone(),
                load_balancer_ips: load_balancer_ips.clone(),
                affinity_seconds,
                external_policy_local: external_local,
                internal_policy_local: internal_local,
                health_check_node_port: spec
                    .health_check_node_port
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p != 0 && external_local),
                source_ranges: source_ranges.clone(),
            };
            let endpoints = endpoints_for(own_slices, &port_name, protocol);
            state.insert(key, (info, endpoints));
        }
    }
    state
}

/// The endpoints of one service port across the Service's slices, deduplicated by
/// address and sorted as `ip:port` strings, as kube-proxy orders them.
fn endpoints_for(slices: &[&EndpointSlice], port_name: &str, protocol: Protocol) -> Vec<Endpoint> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for slice in slices {
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let ready = conditions.ready.unwrap_or(true);
            let serving = conditions.serving.unwrap_or(ready);
            let terminating = conditions.terminating.unwrap_or(false);
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<Ipv4Addr>() else {
                    continue;
                };
                if !seen.insert((ip, number)) {
                    continue;
                }
                out.push(Endpoint {
                    ip,
                    port: number,
                    ready,
                    serving,
                    terminating,
                    node: endpoint.node_name.clone(),
                });
            }
        }
    }
    out.sort_by_key(|e| e.to_string());
    out
}

/// The endpoints a node uses for a service port, as kube-proxy's
/// `CategorizeEndpoints`: ready ones, or when none is ready the serving terminating
/// ones; for the cluster and for this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Categorized {
    pub cluster: Vec<Endpoint>,
    pub local: Vec<Endpoint>,
    /// Every endpoint some rule of this node sends traffic to.
    pub reachable: Vec<Endpoint>,
    /// Whether the service has a usable endpoint anywhere in the cluster (even if none
    /// is reachable from this node).
    pub any: bool,
}

pub fn categorize(port: &ServicePort, endpoints: &[Endpoint], node: &str) -> Categorized {
    let usable = |pick: &dyn Fn(&Endpoint) -> bool| -> Vec<Endpoint> {
        let ready: Vec<Endpoint> = endpoints
            .iter()
            .filter(|e| e.ready && pick(e))
            .cloned()
            .collect();
        if !ready.is_empty() {
            return ready;
        }
        endpoints
            .iter()
            .filter(|e| e.serving && e.terminating && pick(e))
            .cloned()
            .collect()
    };
    let cluster = if port.uses_cluster_endpoints() {
        usable(&|_| true)
    } else {
        Vec::new()
    };
    let local = if port.uses_local_endpoints() {
        usable(&|e| e.node.as_deref() == Some(node))
    } else {
        Vec::new()
    };
    let any = if port.uses_local_endpoints() {
        endpoints
            .iter()
            .any(|e| e.ready || (e.serving && e.terminating))
    } else {
        !cluster.is_empty()
    };
    let mut reachable: Vec<Endpoint> = cluster.iter().chain(&local).cloned().collect();
    reachable.sort_by_key(|e| e.to_string());
    reachable.dedup();
    Categorized {
        cluster,
        local,
        reachable,
        any,
    }
}
