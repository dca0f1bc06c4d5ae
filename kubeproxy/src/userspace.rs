//! The userspace proxier, as kube-proxy had it until Kubernetes 1.25
//! (`pkg/proxy/userspace`): for every service port the proxy opens a socket of its own
//! on a free port of the node, and iptables sends the service's traffic there — from
//! pods (`KUBE-PORTALS-CONTAINER`, from PREROUTING) with REDIRECT, from the node itself
//! (`KUBE-PORTALS-HOST`, from OUTPUT) with DNAT to the node's address, and the same for
//! node ports (`KUBE-NODEPORT-CONTAINER`, `KUBE-NODEPORT-HOST`). The proxy then opens a
//! connection of its own to a backend and copies the bytes, so backends see the node,
//! not the client, and a backend that refuses is skipped for the next one.
//!
//! [`plan`] lays the rules out (pure); [`balancer`] chooses backends (pure); [`socket`]
//! holds the proxy sockets; [`Proxier`] opens and closes them as services come and go.

pub mod balancer;
pub mod socket;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use crate::iptables::{Config, Jump};
use crate::kernel::{self, Position};
use crate::model::{categorize, Endpoint, Protocol, ServicePort, ServicePortName, State};
use crate::proxier::SyncKind;

pub use balancer::{Balancer, Scheduler};
use socket::ProxySocket;

pub const KUBE_PORTALS_CONTAINER: &str = "KUBE-PORTALS-CONTAINER";
pub const KUBE_PORTALS_HOST: &str = "KUBE-PORTALS-HOST";
pub const KUBE_NODEPORT_CONTAINER: &str = "KUBE-NODEPORT-CONTAINER";
pub const KUBE_NODEPORT_HOST: &str = "KUBE-NODEPORT-HOST";
pub const KUBE_NODEPORT_NON_LOCAL: &str = "KUBE-NODEPORT-NON-LOCAL";

pub const NAT_CHAINS: [&str; 4] = [
    KUBE_PORTALS_CONTAINER,
    KUBE_PORTALS_HOST,
    KUBE_NODEPORT_CONTAINER,
    KUBE_NODEPORT_HOST,
];
pub const FILTER_CHAINS: [&str; 1] = [KUBE_NODEPORT_NON_LOCAL];

/// The jumps into the userspace chains and where each goes, as upstream's
/// `iptablesInit`: portals first, node ports (any local address) last.
pub fn jumps() -> Vec<(Jump, Position)> {
    let portals = "handle ClusterIPs; NOTE: this must be before the NodePort rules";
    let node_ports = "handle service NodePorts; NOTE: this must be the last rule in the chain";
    let jump = |table, from, to, extra: &[&'static str], comment: &'static str| {
        let mut args: Vec<&'static str> = extra.to_vec();
        args.extend(["-m", "comment", "--comment", comment]);
        Jump {
            table,
            from,
            to,
            args,
        }
    };
    let local = ["-m", "addrtype", "--dst-type", "LOCAL"];
    vec![
        (
            jump("nat", "PREROUTING", KUBE_PORTALS_CONTAINER, &[], portals),
            Position::Prepend,
        ),
        (
            jump("nat", "OUTPUT", KUBE_PORTALS_HOST, &[], portals),
            Position::Prepend,
        ),
        (
            jump(
                "nat",
                "PREROUTING",
                KUBE_NODEPORT_CONTAINER,
                &local,
                node_ports,
            ),
            Position::Append,
        ),
        (
            jump("nat", "OUTPUT", KUBE_NODEPORT_HOST, &local, node_ports),
            Position::Append,
        ),
        (
            jump(
                "filter",
                "INPUT",
                KUBE_NODEPORT_NON_LOCAL,
                &[],
                "Ensure that non-local NodePort traffic can flow",
            ),
            Position::Prepend,
        ),
    ]
}

/// How the userspace proxier proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How backends are chosen (`--userspace-scheduler`).
    pub scheduler: Scheduler,
    /// How long an idle UDP "connection" lives (`--udp-timeout`).
    pub udp_timeout: Duration,
}

/// A service port and the port of its proxy socket.
#[derive(Debug, Clone, Copy)]
pub struct Portal<'a> {
    pub service: &'a ServicePort,
    pub proxy_port: u16,
}

/// The rules of the userspace chains, each `-A` line in `iptables-save` form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub nat: BTreeMap<&'static str, Vec<String>>,
    pub filter: BTreeMap<&'static str, Vec<String>>,
}

/// The matches upstream's `iptablesCommonPortalArgs` builds, in `iptables-save` order.
fn portal_match(
    destination: Option<Ipv4Addr>,
    port: u16,
    protocol: Protocol,
    name: &ServicePortName,
) -> String {
    let p = protocol.lower();
    let destination = destination
        .map(|ip| format!("-d {ip}/32 "))
        .unwrap_or_default();
    format!("{destination}-p {p} -m comment --comment \"{name}\" -m {p} --dport {port}")
}

/// The rules for every portal; `host` is the node's address, which traffic from the
/// node itself is DNATed to.
pub fn plan(portals: &[Portal<'_>], host: Ipv4Addr) -> Rules {
    let mut rules = Rules::default();
    for chain in NAT_CHAINS {
        rules.nat.insert(chain, Vec::new());
    }
    for chain in FILTER_CHAINS {
        rules.filter.insert(chain, Vec::new());
    }
    let mut nat = |chain: &'static str, rule: String| {
        rules
            .nat
            .entry(chain)
            .or_default()
            .push(format!("-A {chain} {rule}"));
    };
    for portal in portals {
        let svc = portal.service;
        let redirect = format!("-j REDIRECT --to-ports {}", portal.proxy_port);
        let dnat = format!("-j DNAT --to-destination {host}:{}", portal.proxy_port);
        let matching = |ip| portal_match(Some(ip), svc.port, svc.protocol, &svc.name);
        // The cluster IP and the load balancer IPs, from pods and from the node.
        for ip in std::iter::once(svc.cluster_ip).chain(svc.load_balancer_ips.iter().copied()) {
            nat(
                KUBE_PORTALS_CONTAINER,
                format!("{} {redirect}", matching(ip)),
            );
            nat(KUBE_PORTALS_HOST, format!("{} {dnat}", matching(ip)));
        }
        // External IPs: from outside unless bridged, and when they are the node's own.
        for ip in &svc.external_ips {
            let local = "-m addrtype --dst-type LOCAL";
            nat(
                KUBE_PORTALS_CONTAINER,
                format!("{} -m physdev ! --physdev-is-in {redirect}", matching(*ip)),
            );
            nat(
                KUBE_PORTALS_CONTAINER,
                format!("{} {local} {redirect}", matching(*ip)),
            );
            nat(
                KUBE_PORTALS_HOST,
                format!("{} {local} {dnat}", matching(*ip)),
            );
        }
        if let Some(node_port) = svc.node_port {
            let matching = portal_match(None, node_port, svc.protocol, &svc.name);
            nat(KUBE_NODEPORT_CONTAINER, format!("{matching} {redirect}"));
            nat(KUBE_NODEPORT_HOST, format!("{matching} {dnat}"));
            let accept = portal_match(None, portal.proxy_port, svc.protocol, &svc.name);
            rules
                .filter
                .entry(KUBE_NODEPORT_NON_LOCAL)
                .or_default()
                .push(format!(
                    "-A {KUBE_NODEPORT_NON_LOCAL} {accept} -m state --state NEW -j ACCEPT"
                ));
        }
    }
    rules
}

/// The `iptables-restore --noflush` input that rewrites the userspace chains.
pub fn render(rules: &Rules) -> String {
    let mut out = String::new();
    for (table, chains, body) in [
        ("nat", &NAT_CHAINS[..], &rules.nat),
        ("filter", &FILTER_CHAINS[..], &rules.filter),
    ] {
        let _ = writeln!(out, "*{table}");
        for chain in chains {
            let _ = writeln!(out, ":{chain} - [0:0]");
        }
        for chain in chains {
            for rule in body.get(chain).into_iter().flatten() {
                let _ = writeln!(out, "{rule}");
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The endpoints the proxy balances over: the usable ones of the whole cluster, since
/// the userspace proxier knows no traffic policies.
fn backends(port: &ServicePort, endpoints: &[Endpoint], node: &str) -> Vec<SocketAddrV4> {
    let policy_free = ServicePort {
        internal_policy_local: false,
        external_policy_local: false,
        ..port.clone()
    };
    categorize(&policy_free, endpoints, node)
        .cluster
        .iter()
        .map(|e| SocketAddrV4::new(e.ip, e.port))
        .collect()
}

/// A proxied service port.
struct Proxied {
    port: ServicePort,
    shared: Arc<socket::Service>,
    socket: ProxySocket,
    /// The node port held open while it is proxied.
    node_port: Option<(u16, OwnedFd)>,
}

fn claim_node_port(port: &ServicePort) -> Option<(u16, OwnedFd)> {
    let node_port = port.node_port?;
    match socket::claim(port.protocol, node_port) {
        Ok(fd) => Some((node_port, fd)),
        Err(err) => {
            tracing::warn!(service = %port.name, node_port, %err, "can't open node port");
            None
        }
    }
}

/// What the userspace proxier keeps between syncs: a proxy socket per service port.
pub struct Proxier {
    config: Config,
    options: Options,
    proxied: BTreeMap<ServicePortName, Proxied>,
}

impl Proxier {
    pub fn new(config: Config, options: Options) -> Proxier {
        Proxier {
            config,
            options,
            proxied: BTreeMap::new(),
        }
    }

    /// Opens proxy sockets for new service ports, hands every balancer its endpoints,
    /// rewrites the userspace chains, then closes the sockets of service ports that
    /// are gone. Every sync is full, as upstream's.
    pub async fn sync(&mut self, state: &State) -> kernel::Result<SyncKind> {
        let host = kernel::host_ip()?;
        for (table, chain) in NAT_CHAINS
            .iter()
            .map(|c| ("nat", *c))
            .chain(FILTER_CHAINS.iter().map(|c| ("filter", *c)))
        {
            kernel::ensure_chain(table, chain).await?;
        }
        for (jump, position) in jumps() {
            kernel::ensure_jump(&jump, position).await?;
        }
        let mut stale = Vec::new();
        for (name, (port, endpoints)) in state {
            if port.protocol == Protocol::Sctp {
                continue;
            }
            if self
                .proxied
                .get(name)
                .is_some_and(|p| p.port.protocol != port.protocol)
            {
                stale.extend(self.proxied.remove(name));
            }
            if !self.proxied.contains_key(name) {
                match self.open(port).await {
                    Ok(proxied) => {
                        self.proxied.insert(name.clone(), proxied);
                    }
                    Err(err) => {
                        tracing::warn!(service = %name, %err, "failed to open a proxy socket");
                        continue;
                    }
                }
            }
            let Some(proxied) = self.proxied.get_mut(name) else {
                continue;
            };
            if proxied.node_port.as_ref().map(|(p, _)| *p) != port.node_port {
                proxied.node_port = claim_node_port(port);
            }
            proxied.port = port.clone();
            let affinity = port
                .affinity_seconds
                .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
            let endpoints = backends(port, endpoints, &self.config.node);
            let mut balancer = proxied.shared.balancer();
            balancer.set_affinity(affinity);
            balancer.set_endpoints(endpoints);
        }
        let gone: Vec<ServicePortName> = self
            .proxied
            .keys()
            .filter(|name| !state.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            stale.extend(self.proxied.remove(&name));
        }
        let portals: Vec<Portal<'_>> = self
            .proxied
            .values()
            .map(|p| Portal {
                service: &p.port,
                proxy_port: p.socket.port(),
            })
            .collect();
        kernel::restore(&render(&plan(&portals, host))).await?;
        for proxied in stale {
            tracing::info!(service = %proxied.port.name, "stopped proxying for service");
        }
        Ok(SyncKind::Full)
    }

    async fn open(&self, port: &ServicePort) -> std::io::Result<Proxied> {
        let shared = Arc::new(socket::Service::new(
            port.name.clone(),
            Balancer::new(self.options.scheduler, port.cluster_ip),
        ));
        let socket =
            ProxySocket::open(port.protocol, shared.clone(), self.options.udp_timeout).await?;
        tracing::info!(
            service = %port.name,
            protocol = port.protocol.lower(),
            proxy_port = socket.port(),
            scheduler = %self.options.scheduler,
            "proxying for service"
        );
        Ok(Proxied {
            port: port.clone(),
            shared,
            socket,
            node_port: claim_node_port(port),
        })
    }
}

#[cfg(test)]
mod tests;
