//! The cluster's machines as real network namespaces: an underlay namespace holding the
//! bridge `br0` with the gateway address, one namespace per node and one for the
//! external client host, each with an `eth0` on the underlay. Namespaces are named
//! like `ip netns` names them (a bind mount under `/run/netns`), all prefixed with the
//! cluster's name, and removed again when the [`Topology`] is dropped.
//!
//! Every link, address and route is made by a netlink socket opened on a short-lived
//! thread that entered one of the namespaces created here; nothing here changes the
//! root namespace. This module does not run nodes or pods: it only builds the machines
//! and the wire between them.

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// The longest cluster name: `<cluster>-pext` must fit the kernel's 15-byte names.
pub const MAX_CLUSTER_NAME: usize = 8;
/// The most nodes an underlay holds: nodes sit at .11 … .99, the external host at .100.
pub const MAX_NODES: usize = 89;
/// The default underlay, 192.168.1.0/24.
pub const DEFAULT_UNDERLAY: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(192, 168, 1, 0),
    prefix: 24,
};
const BRIDGE: &str = "br0";
const HOST_INTERFACE: &str = "eth0";
const GATEWAY_OFFSET: u32 = 1;
const NODE_OFFSET: u32 = 10;
const EXTERNAL_OFFSET: u32 = 100;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid cluster name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid topology: {0}")]
    InvalidSpec(String),
    #[error("network namespace {0} already exists: the cluster name is taken (remove a stale cluster first)")]
    Exists(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error(transparent)]
    Netns(#[from] netns::Error),
}

impl Error {
    fn io(context: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Error::Io {
            context: context.into(),
            source: source.into(),
        }
    }

    fn netlink(context: impl Into<String>, source: rtnetlink::Error) -> Self {
        Error::Netlink {
            context: context.into(),
            source,
        }
    }
}

/// An IPv4 network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The address `offset` hosts into the network, if it is a host address (neither
    /// the network nor the broadcast address).
    pub fn host(&self, offset: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix.min(32)));
        if offset == 0 || u64::from(offset) + 1 >= size {
            return None;
        }
        Some(Ipv4Addr::from(u32::from(self.network()) + offset))
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologySpec {
    /// Short name (lowercase alphanumeric, at most [`MAX_CLUSTER_NAME`] characters),
    /// the prefix of every namespace and device.
    pub cluster: String,
    /// How many nodes, 1 to [`MAX_NODES`].
    pub nodes: usize,
    /// The network the nodes, the gateway and the external host share.
    pub underlay: Ipv4Net,
}

impl TopologySpec {
    /// `nodes` nodes on the default underlay.
    pub fn new(cluster: impl Into<String>, nodes: usize) -> Self {
        TopologySpec {
            cluster: cluster.into(),
            nodes,
            underlay: DEFAULT_UNDERLAY,
        }
    }
}

/// Checks that `cluster` can prefix every namespace and device name.
pub fn validate_cluster_name(cluster: &str) -> Result<()> {
    let invalid = |reason: &str| Error::InvalidName {
        name: cluster.to_owned(),
        reason: reason.to_owned(),
    };
    if cluster.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if cluster.len() > MAX_CLUSTER_NAME {
        return Err(invalid(&format!(
            "must be at most {MAX_CLUSTER_NAME} characters, so device names fit in 15"
        )));
    }
    if !cluster
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(invalid("must be lowercase letters and digits only"));
    }
    Ok(())
}

/// One machine on the underlay: its namespace, address and the two ends of its veth.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Host {
    netns: String,
    ip: Ipv4Addr,
    /// The veth end attached to the bridge, in the underlay namespace.
    underlay_if: String,
    /// The other end's name until it is moved into the host and renamed `eth0`.
    peer_if: String,
    forwarding: bool,
}

/// The names and addresses of a topology, computed before anything is made.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    cluster: String,
    underlay: Ipv4Net,
    underlay_netns: String,
    gateway: Ipv4Addr,
    nodes: Vec<Host>,
    external: Host,
}

impl Plan {
    fn new(spec: &TopologySpec) -> Result<Plan> {
        validate_cluster_name(&spec.cluster)?;
        if spec.nodes == 0 || spec.nodes > MAX_NODES {
            return Err(Error::InvalidSpec(format!(
                "{} nodes: must be between 1 and {MAX_NODES}",
                spec.nodes
            )));
        }
        let underlay = spec.underlay;
        let address = |offset: u32| {
            underlay.host(offset).ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "underlay {underlay} is too small (needs host .{EXTERNAL_OFFSET})"
                ))
            })
        };
        let c = &spec.cluster;
        let external = Host {
            netns: format!("{c}-ext"),
            ip: address(EXTERNAL_OFFSET)?,
            underlay_if: format!("{c}-ext"),
            peer_if: format!("{c}-pext"),
            forwarding: false,
        };
        let nodes = (1..=spec.nodes)
            .map(|i| {
                let offset = u32::try_from(i)
                    .map_err(|_| Error::InvalidSpec(format!("{} nodes: too many", spec.nodes)))?;
                Ok(Host {
                    netns: format!("{c}-node{i}"),
                    ip: address(NODE_OFFSET + offset)?,
                    underlay_if: format!("{c}-n{i}"),
                    peer_if: format!("{c}-p{i}"),
                    forwarding: true,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan {
            cluster: c.clone(),
            underlay,
            underlay_netns: format!("{c}-underlay"),
            gateway: address(GATEWAY_OFFSET)?,
            nodes,
            external,
        })
    }

    fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.nodes.iter().chain(std::iter::once(&self.external))
    }

    fn namespaces(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.underlay_netns.as_str()).chain(self.hosts().map(|h| h.netns.as_str()))
    }
}

/// A cluster's namespaces and the underlay between them. Dropping it removes every
/// namespace it made (their links go with them), unless it was [detached](Self::detach).
#[derive(Debug)]
pub struct Topology {
    plan: Plan,
    /// The namespaces made so far, removed on drop.
    created: Vec<String>,
}

impl Topology {
    /// Builds the topology of `spec`. On failure, whatever was already made is removed.
    pub async fn create(spec: &TopologySpec) -> Result<Topology> {
        let plan = Plan::new(spec)?;
        if let Some(taken) = cluster_namespaces(&plan.cluster)?.into_iter().next() {
            return Err(Error::Exists(taken));
        }
        let mut topology = Topology {
            plan,
            created: Vec::new(),
        };
        let names: Vec<String> = topology.plan.namespaces().map(str::to_owned).collect();
        for name in names {
            netns::add(&name).map_err(|e| match e {
                netns::Error::Exists(name) => Error::Exists(name),
                e => e.into(),
            })?;
            topology.created.push(name);
        }
        topology.wire().await?;
        tracing::debug!(
            cluster = %topology.plan.cluster,
            nodes = topology.plan.nodes.len(),
            underlay = %topology.plan.underlay,
            "topology created"
        );
        Ok(topology)
    }

    /// Makes the bridge and the veth pairs in the underlay, then configures every host.
    async fn wire(&self) -> Result<()> {
        let plan = &self.plan;
        let ends = plan
            .hosts()
            .map(|host| Ok((host.clone(), netns::open(&host.netns)?)))
            .collect::<Result<Vec<_>>>()?;
        let underlay = plan.underlay;
        let gateway = plan.gateway;
        netns::netlink_in(&plan.underlay_netns, move |handle| async move {
            configure_underlay(&handle, underlay, gateway, &ends).await
        })
        .await?;
        futures::future::try_join_all(plan.hosts().map(|host| {
            let owned = host.clone();
            netns::netlink_in(&host.netns, move |handle| async move {
                configure_host(&handle, &owned, underlay.prefix, gateway).await
            })
        }))
        .await?;
        Ok(())
    }

    /// The cluster's name.
    pub fn cluster(&self) -> &str {
        &self.plan.cluster
    }

    /// How many nodes there are.
    pub fn nodes(&self) -> usize {
        self.plan.nodes.len()
    }

    /// The namespace holding the underlay bridge and the gateway address.
    pub fn underlay_netns(&self) -> &str {
        &self.plan.underlay_netns
    }

    /// The namespace of node `i` (counted from 1).
    pub fn node_netns(&self, i: usize) -> Option<&str> {
        self.node(i).map(|n| n.netns.as_str())
    }

    /// The underlay address of node `i` (counted from 1).
    pub fn node_ip(&self, i: usize) -> Option<Ipv4Addr> {
        self.node(i).map(|n| n.ip)
    }

    /// The namespace of the external client host.
    pub fn external_netns(&self) -> &str {
        &self.plan.external.netns
    }

    /// The underlay address of the external client host.
    pub fn external_ip(&self) -> Ipv4Addr {
        self.plan.external.ip
    }

    /// The gateway address, on `br0` in the underlay namespace.
    pub fn gateway(&self) -> Ipv4Addr {
        self.plan.gateway
    }

    /// The underlay network.
    pub fn underlay(&self) -> Ipv4Net {
        self.plan.underlay
    }

    /// Leaves everything running (to be removed later with [`remove_cluster`]) and
    /// returns the names of the namespaces.
    pub fn detach(mut self) -> Vec<String> {
        std::mem::take(&mut self.created)
    }

    fn node(&self, i: usize) -> Option<&Host> {
        i.checked_sub(1).and_then(|i| self.plan.nodes.get(i))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for name in self.created.drain(..).rev() {
            if let Err(err) = remove_host(&name) {
                tracing::warn!(%err, netns = %name, "failed to remove network namespace");
            }
        }
    }
}

/// Removes every namespace of `cluster` (names starting with `<cluster>-`), e.g. what
/// a crashed run left behind. Returns how many were removed.
pub fn remove_cluster(cluster: &str) -> Result<usize> {
    validate_cluster_name(cluster)?;
    let names = cluster_namespaces(cluster)?;
    for name in &names {
        remove_host(name)?;
    }
    Ok(names.len())
}

/// Removes a namespace of the cluster: first every process still inside it (a
/// component or a pod of a node), then the namespace.
fn remove_host(name: &str) -> Result<()> {
    netns::kill_all(name)?;
    Ok(netns::remove(name)?)
}

/// The named namespaces that belong to `cluster`.
fn cluster_namespaces(cluster: &str) -> Result<Vec<String>> {
    Ok(netns::list(&format!("{cluster}-"))?)
}

/// In the underlay namespace: `lo` up, the bridge with the gateway address, and per
/// host a veth pair whose underlay end joins the bridge and whose peer moves into the
/// host's namespace.
async fn configure_underlay(
    handle: &Handle,
    underlay: Ipv4Net,
    gateway: Ipv4Addr,
    hosts: &[(Host, File)],
) -> Result<()> {
    let lo = netns::require_link(handle, "lo").await?;
    netns::set_up(handle, lo.header.index, "lo").await?;
    handle
        .link()
        .add(LinkBridge::new(BRIDGE).build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("creating bridge {BRIDGE}"), e))?;
    let bridge = netns::require_link(handle, BRIDGE).await?.header.index;
    netns::add_address(handle, bridge, gateway, underlay.prefix, BRIDGE).await?;
    netns::set_up(handle, bridge, BRIDGE).await?;
    for (host, netns) in hosts {
        handle
            .link()
            .add(LinkVeth::new(&host.underlay_if, &host.peer_if).build())
            .execute()
            .await
            .map_err(|e| Error::netlink(format!("creating veth {}", host.underlay_if), e))?;
        let peer = netns::require_link(handle, &host.peer_if)
            .await?
            .header
            .index;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(peer)
                    .setns_by_fd(netns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(|e| {
                Error::netlink(format!("moving {} into {}", host.peer_if, host.netns), e)
            })?;
        let end = netns::require_link(handle, &host.underlay_if)
            .await?
            .header
            .index;
        handle
            .link()
            .set(LinkUnspec::new_with_index(end).controller(bridge).build())
            .execute()
            .await
            .map_err(|e| {
                Error::netlink(format!("attaching {} to {BRIDGE}", host.underlay_if), e)
            })?;
        netns::set_up(handle, end, &host.underlay_if).await?;
    }
    Ok(())
}

/// In a host's namespace: `lo` up, the veth peer renamed `eth0`, addressed and up, the
/// default route through the gateway, and IPv4 forwarding on for nodes.
async fn configure_host(handle: &Handle, host: &Host, prefix: u8, gateway: Ipv4Addr) -> Result<()> {
    let lo = netns::require_link(handle, "lo").await?;
    netns::set_up(handle, lo.header.index, "lo").await?;
    let index = netns::require_link(handle, &host.peer_if)
        .await?
        .header
        .index;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .name(HOST_INTERFACE.to_owned())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("renaming {} to {HOST_INTERFACE}", host.peer_if), e))?;
    netns::set_up(handle, index, HOST_INTERFACE).await?;
    netns::add_address(handle, index, host.ip, prefix, HOST_INTERFACE).await?;
    handle
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(index)
                .build(),
        )
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("default route via {gateway}"), e))?;
    if host.forwarding {
        // /proc/sys/net shows the namespace of the thread that opens it: this one.
        fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| Error::io(format!("enabling IPv4 forwarding in {}", host.netns), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(cluster: &str, nodes: usize) -> Result<Plan> {
        Plan::new(&TopologySpec::new(cluster, nodes))
    }

    #[test]
    fn default_address_plan() {
        let plan = plan("demo", 3).expect("valid spec");
        assert_eq!(plan.gateway, Ipv4Addr::new(192, 168, 1, 1));
        let ips: Vec<_> = plan.nodes.iter().map(|n| n.ip).collect();
        assert_eq!(
            ips,
            [
                Ipv4Addr::new(192, 168, 1, 11),
                Ipv4Addr::new(192, 168, 1, 12),
                Ipv4Addr::new(192, 168, 1, 13)
            ]
        );
        assert_eq!(plan.external.ip, Ipv4Addr::new(192, 168, 1, 100));
        assert!(plan.nodes.iter().all(|n| n.forwarding));
        assert!(!plan.external.forwarding);
    }

    #[test]
    fn names_carry_the_cluster_and_fit_the_kernel() {
        let plan = plan("abcdefgh", MAX_NODES).expect("valid spec");
        assert_eq!(
            plan.namespaces().take(3).collect::<Vec<_>>(),
            ["abcdefgh-underlay", "abcdefgh-node1", "abcdefgh-node2"]
        );
        assert_eq!(plan.external.netns, "abcdefgh-ext");
        assert_eq!(plan.nodes[0].underlay_if, "abcdefgh-n1");
        assert_eq!(plan.nodes[0].peer_if, "abcdefgh-p1");
        assert_eq!(plan.nodes[88].ip, Ipv4Addr::new(192, 168, 1, 99));
        for host in plan.hosts() {
            assert!(host.underlay_if.len() <= 15, "{}", host.underlay_if);
            assert!(host.peer_if.len() <= 15, "{}", host.peer_if);
            assert!(host.netns.starts_with("abcdefgh-"));
        }
    }

    #[test]
    fn other_underlays() {
        let spec = TopologySpec {
            cluster: "lab".to_owned(),
            nodes: 2,
            underlay: Ipv4Net {
                addr: Ipv4Addr::new(10, 1, 0, 77),
                prefix: 16,
            },
        };
        let plan = Plan::new(&spec).expect("valid spec");
        assert_eq!(plan.gateway, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(plan.nodes[1].ip, Ipv4Addr::new(10, 1, 0, 12));
        let small = TopologySpec {
            underlay: Ipv4Net {
                addr: Ipv4Addr::new(10, 1, 0, 0),
                prefix: 26,
            },
            ..spec
        };
        assert!(matches!(Plan::new(&small), Err(Error::InvalidSpec(_))));
    }

    #[test]
    fn host_addresses() {
        let net = Ipv4Net {
            addr: Ipv4Addr::new(192, 168, 1, 0),
            prefix: 24,
        };
        assert_eq!(net.host(0), None);
        assert_eq!(net.host(254), Some(Ipv4Addr::new(192, 168, 1, 254)));
        assert_eq!(net.host(255), None);
        assert_eq!(net.to_string(), "192.168.1.0/24");
    }

    #[test]
    fn cluster_names_are_checked() {
        for name in ["", "toolongname", "Upper", "a-b", "a_b", "ü"] {
            assert!(
                matches!(validate_cluster_name(name), Err(Error::InvalidName { .. })),
                "{name:?}"
            );
        }
        for name in ["a", "t1x2y", "abcdefgh"] {
            assert!(validate_cluster_name(name).is_ok(), "{name:?}");
        }
        assert!(matches!(plan("ok", 0), Err(Error::InvalidSpec(_))));
        assert!(matches!(
            plan("ok", MAX_NODES + 1),
            Err(Error::InvalidSpec(_))
        ));
    }
}
