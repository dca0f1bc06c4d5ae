//! The pure half of flannel: leases read from Node objects, the annotations a node
//! publishes, the neighbour / FDB / route set every other node's lease asks for, the
//! diff against what the kernel reports, `subnet.env` and the masquerade rules. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use serde_json::json;

use super::{Error, Result, VNI};
use crate::topology::Ipv4Net;

/// The prefix of flannel's node annotations (its default `--kube-annotation-prefix`).
pub const ANNOTATION_PREFIX: &str = "flannel.alpha.coreos.com/";
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
pub const KUBE_SUBNET_MANAGER: &str = "flannel.alpha.coreos.com/kube-subnet-manager";
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";
/// The only backend this module speaks.
pub const BACKEND_VXLAN: &str = "vxlan";
/// The chain flannel masquerades from, in the nat table.
pub const MASQ_CHAIN: &str = "FLANNEL-POSTRTG";
/// The mark kube-proxy sets on packets it masquerades itself; flannel leaves them alone.
pub const KUBE_PROXY_MARK: &str = "0x4000/0x4000";
const MASQ_COMMENT: &str = "flanneld masq";
const MULTICAST: &str = "224.0.0.0/4";

/// A hardware address.
pub type Mac = [u8; 6];

/// What a node's Node object says about its share of the overlay, as flannel's kube
/// subnet manager turns a Node into a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub node: String,
    /// The node's pod CIDR (`spec.podCIDR`).
    pub subnet: Ipv4Net,
    /// Where VXLAN packets for the node go: the `public-ip` annotation, else the
    /// node's InternalIP.
    pub public_ip: Ipv4Addr,
    pub vni: u32,
    /// The MAC of the node's `flannel.1`.
    pub vtep_mac: Mac,
}

impl Lease {
    /// The lease of `node`; `None` while the node has no pod CIDR or has not
    /// published its VXLAN backend data yet, or uses another backend.
    pub fn from_node(node: &Node) -> Result<Option<Lease>> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let invalid = |reason: String| Error::InvalidLease {
            node: name.clone(),
            reason,
        };
        let annotations = node.metadata.annotations.as_ref();
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        let Some(pod_cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) else {
            return Ok(None);
        };
        let Some(backend_data) = annotation(BACKEND_DATA) else {
            return Ok(None);
        };
        if annotation(BACKEND_TYPE).is_some_and(|t| t != BACKEND_VXLAN) {
            return Ok(None);
        }
        let subnet = parse_cidr(pod_cidr)
            .ok_or_else(|| invalid(format!("pod CIDR {pod_cidr:?} is not an IPv4 network")))?;
        let data: serde_json::Value = serde_json::from_str(backend_data)
            .map_err(|e| invalid(format!("backend data {backend_data:?}: {e}")))?;
        let vni = data
            .get("VNI")
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| invalid(format!("backend data {backend_data:?} has no VNI")))?;
        let vtep_mac = data
            .get("VtepMAC")
            .and_then(serde_json::Value::as_str)
            .and_then(parse_mac)
            .ok_or_else(|| invalid(format!("backend data {backend_data:?} has no VtepMAC")))?;
        let public_ip = match annotation(PUBLIC_IP) {
            Some(ip) => ip
                .parse()
                .map_err(|_| invalid(format!("public IP {ip:?} is not an IPv4 address")))?,
            None => internal_ip(node).ok_or_else(|| {
                invalid("no public-ip annotation and no IPv4 InternalIP".to_owned())
            })?,
        };
        Ok(Some(Lease {
            node: name,
            subnet,
            public_ip,
            vni,
            vtep_mac,
        }))
    }
}

/// The node's first IPv4 InternalIP.
fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// The annotations a node publishes for its lease, as flannel writes them.
pub fn node_annotations(public_ip: Ipv4Addr, vtep_mac: Mac) -> BTreeMap<String, String> {
    let backend_data = json!({ "VNI": VNI, "VtepMAC": netns::format_mac(&vtep_mac) });
    BTreeMap::from([
        (BACKEND_DATA.to_owned(), backend_data.to_string()),
        (BACKEND_TYPE.to_owned(), BACKEND_VXLAN.to_owned()),
        (KUBE_SUBNET_MANAGER.to_owned(), "true".to_owned()),
        (PUBLIC_IP.to_owned(), public_ip.to_string()),
    ])
}

/// A permanent ARP entry on `flannel.1`: a remote subnet's `.0` is the remote VTEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// A permanent FDB entry on `flannel.1`: frames for a remote VTEP MAC go to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: Mac,
    pub dst: Ipv4Addr,
}

/// `dst/prefix via gateway dev flannel.1 onlink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// Neighbours, FDB entries and routes on `flannel.1`: what the plan wants, what the
/// kernel has, or one side of a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entries {
    pub neighbours: BTreeSet<Neighbour>,
    pub fdb: BTreeSet<FdbEntry>,
    pub routes: BTreeSet<Route>,
}

impl Entries {
    pub fn is_empty(&self) -> bool {
        self.neighbours.is_empty() && self.fdb.is_empty() && self.routes.is_empty()
    }

    /// The entries one remote lease asks for.
    pub fn insert_lease(&mut self, lease: &Lease) {
        let vtep = lease.subnet.network();
        self.neighbours.insert(Neighbour {
            ip: vtep,
            mac: lease.vtep_mac,
        });
        self.fdb.insert(FdbEntry {
            mac: lease.vtep_mac,
            dst: lease.public_ip,
        });
        self.routes.insert(Route {
            dst: vtep,
            prefix: lease.subnet.prefix,
            gateway: vtep,
        });
    }

    fn minus(&self, other: &Entries) -> Entries {
        Entries {
            neighbours: self
                .neighbours
                .difference(&other.neighbours)
                .copied()
                .collect(),
            fdb: self.fdb.difference(&other.fdb).copied().collect(),
            routes: self.routes.difference(&other.routes).copied().collect(),
        }
    }
}

/// What to add to and remove from the kernel to get from the current entries to the
/// desired ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub add: Entries,
    pub remove: Entries,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// The entries node `own` needs: for every other node with a lease, the neighbour
/// and FDB entry of its VTEP and the route to its pod CIDR. Nodes whose lease cannot
/// be read are skipped with a warning, as flannel skips them.
pub fn plan(own: &str, nodes: &[Node]) -> Entries {
    let mut desired = Entries::default();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(own) {
            continue;
        }
        match Lease::from_node(node) {
            Ok(Some(lease)) => desired.insert_lease(&lease),
            Ok(None) => {}
            Err(err) => tracing::warn!(%err, "skipping node"),
        }
    }
    desired
}

/// What to change so the kernel's `current` entries become `desired`.
pub fn diff(desired: &Entries, current: &Entries) -> Changes {
    Changes {
        add: desired.minus(current),
        remove: current.minus(desired),
    }
}

/// The content of `subnet.env`, as flannel writes it: the subnet line carries the
/// first address of the node's pod CIDR (the bridge's address).
pub fn subnet_env(network: Ipv4Net, subnet: Ipv4Net, mtu: u32, ip_masq: bool) -> String {
    let first = Ipv4Addr::from(u32::from(subnet.network()).wrapping_add(1));
    format!(
        "FLANNEL_NETWORK={}/{}\nFLANNEL_SUBNET={first}/{}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ip_masq}\n",
        network.network(),
        network.prefix,
        subnet.prefix,
    )
}

/// The `iptables-restore --noflush` input for flannel's masquerade rules in the nat
/// table: the chain declaration flushes `FLANNEL-POSTRTG`, which then gets flannel's
/// rules in flannel's order; the jump from POSTROUTING is deleted first when it
/// `jump_exists`, so it is there exactly once afterwards.
pub fn masquerade_rules(network: Ipv4Net, subnet: Ipv4Net, jump_exists: bool) -> String {
    let cluster = format!("{}/{}", network.network(), network.prefix);
    let pods = format!("{}/{}", subnet.network(), subnet.prefix);
    let comment = format!("-m comment --comment \"{MASQ_COMMENT}\"");
    let jump = format!("POSTROUTING {comment} -j {MASQ_CHAIN}");
    let mut out = format!("*nat\n:{MASQ_CHAIN} - [0:0]\n");
    if jump_exists {
        let _ = writeln!(out, "-D {jump}");
    }
    let rules = [
        jump.clone(),
        format!("{MASQ_CHAIN} -m mark --mark {KUBE_PROXY_MARK} {comment} -j RETURN"),
        format!("{MASQ_CHAIN} -s {pods} -d {cluster} {comment} -j RETURN"),
        format!("{MASQ_CHAIN} -s {cluster} -d {pods} {comment} -j RETURN"),
        format!("{MASQ_CHAIN} ! -s {cluster} -d {pods} {comment} -j RETURN"),
        format!(
            "{MASQ_CHAIN} -s {cluster} ! -d {MULTICAST} {comment} -j MASQUERADE --random-fully"
        ),
        format!("{MASQ_CHAIN} ! -s {cluster} -d {cluster} {comment} -j MASQUERADE --random-fully"),
    ];
    for rule in rules {
        let _ = writeln!(out, "-A {rule}");
    }
    out.push_str("COMMIT\n");
    out
}

/// The arguments of `iptables -t nat -C` that check for the jump into flannel's chain.
pub fn masquerade_jump_check() -> Vec<String> {
    [
        "-t",
        "nat",
        "-C",
        "POSTROUTING",
        "-m",
        "comment",
        "--comment",
        MASQ_COMMENT,
        "-j",
        MASQ_CHAIN,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Parses `a.b.c.d/n`.
pub fn parse_cidr(s: &str) -> Option<Ipv4Net> {
    let (addr, prefix) = s.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    (prefix <= 32).then_some(Ipv4Net {
        addr: addr.parse().ok()?,
        prefix,
    })
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const MAC2: Mac = [0x0a, 0x58, 0x0a, 0xf4, 0x02, 0x00];
    const MAC3: Mac = [0x0a, 0x58, 0x0a, 0xf4, 0x03, 0x00];

    fn net(s: &str) -> Ipv4Net {
        parse_cidr(s).expect("valid cidr")
    }

    fn node(
        name: &str,
        pod_cidr: Option<&str>,
        annotations: BTreeMap<String, String>,
        internal_ip: &str,
    ) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: pod_cidr.map(str::to_owned),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "Hostname".to_owned(),
                        address: name.to_owned(),
                    },
                    NodeAddress {
                        type_: "InternalIP".to_owned(),
                        address: internal_ip.to_owned(),
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    fn flannel_node(i: u8, mac: Mac) -> Node {
        let ip = Ipv4Addr::new(192, 168, 1, 10 + i);
        node(
            &format!("node{i}"),
            Some(&format!("10.244.{i}.0/24")),
            node_annotations(ip, mac),
            &ip.to_string(),
        )
    }

    #[test]
    fn annotations_are_flannels() {
        let a = node_annotations(Ipv4Addr::new(192, 168, 1, 12), MAC2);
        let pairs: Vec<(&str, &str)> = a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            pairs,
            [
                (
                    "flannel.alpha.coreos.com/backend-data",
                    r#"{"VNI":1,"VtepMAC":"0a:58:0a:f4:02:00"}"#
                ),
                ("flannel.alpha.coreos.com/backend-type", "vxlan"),
                ("flannel.alpha.coreos.com/kube-subnet-manager", "true"),
                ("flannel.alpha.coreos.com/public-ip", "192.168.1.12"),
            ]
        );
        assert!(a.keys().all(|k| k.starts_with(ANNOTATION_PREFIX)));
    }

    #[test]
    fn leases_are_read_from_nodes() {
        let lease = Lease::from_node(&flannel_node(2, MAC2))
            .expect("valid")
            .expect("lease");
        assert_eq!(
            lease,
            Lease {
                node: "node2".to_owned(),
                subnet: net("10.244.2.0/24"),
                public_ip: Ipv4Addr::new(192, 168, 1, 12),
                vni: 1,
                vtep_mac: MAC2,
            }
        );
    }

    #[test]
    fn the_internal_ip_stands_in_for_a_missing_public_ip() {
        let mut annotations = node_annotations(Ipv4Addr::new(1, 1, 1, 1), MAC3);
        annotations.remove(PUBLIC_IP);
        let n = node("node3", Some("10.244.3.0/24"), annotations, "192.168.1.13");
        let lease = Lease::from_node(&n).expect("valid").expect("lease");
        assert_eq!(lease.public_ip, Ipv4Addr::new(192, 168, 1, 13));
    }

    #[test]
    fn nodes_without_a_lease_are_skipped() {
        let no_cidr = node(
            "a",
            None,
            node_annotations(Ipv4Addr::new(192, 168, 1, 11), MAC2),
            "192.168.1.11",
        );
        assert_eq!(Lease::from_node(&no_cidr).expect("valid"), None);
        let no_data = node("b", Some("10.244.1.0/24"), BTreeMap::new(), "192.168.1.11");
        assert_eq!(Lease::from_node(&no_data).expect("valid"), None);
        let mut host_gw = node_annotations(Ipv4Addr::new(192, 168, 1, 11), MAC2);
        host_gw.insert(BACKEND_TYPE.to_owned(), "host-gw".to_owned());
        let host_gw = node("c", Some("10.244.1.0/24"), host_gw, "192.168.1.11");
        assert_eq!(Lease::from_node(&host_gw).expect("valid"), None);
    }

    #[test]
    fn malformed_leases_are_errors_and_left_out_of_the_plan() {
        let bad = |key: &str, value: &str| {
            let mut a = node_annotations(Ipv4Addr::new(192, 168, 1, 12), MAC2);
            a.insert(key.to_owned(), value.to_owned());
            node("node2", Some("10.244.2.0/24"), a, "192.168.1.12")
        };
        let bad_nodes = [
            bad(BACKEND_DATA, "{not json"),
            bad(BACKEND_DATA, r#"{"VNI":1,"VtepMAC":"zz:58:0a:f4:02:00"}"#),
            bad(BACKEND_DATA, r#"{"VtepMAC":"0a:58:0a:f4:02:00"}"#),
            bad(PUBLIC_IP, "not-an-ip"),
            node(
                "node2",
                Some("fd00::/64"),
                node_annotations(Ipv4Addr::new(192, 168, 1, 12), MAC2),
                "192.168.1.12",
            ),
        ];
        for n in &bad_nodes {
            let err = Lease::from_node(n).expect_err("malformed");
            assert!(matches!(err, Error::InvalidLease { .. }), "{err}");
        }
        assert!(plan("node1", &bad_nodes).is_empty());
    }

    #[test]
    fn the_plan_covers_every_other_node() {
        let nodes = [
            flannel_node(1, [2; 6]),
            flannel_node(2, MAC2),
            flannel_node(3, MAC3),
        ];
        let desired = plan("node1", &nodes);
        let v2 = Ipv4Addr::new(10, 244, 2, 0);
        let v3 = Ipv4Addr::new(10, 244, 3, 0);
        assert_eq!(
            desired.neighbours,
            BTreeSet::from([
                Neighbour { ip: v2, mac: MAC2 },
                Neighbour { ip: v3, mac: MAC3 }
            ])
        );
        assert_eq!(
            desired.fdb,
            BTreeSet::from([
                FdbEntry {
                    mac: MAC2,
                    dst: Ipv4Addr::new(192, 168, 1, 12)
                },
                FdbEntry {
                    mac: MAC3,
                    dst: Ipv4Addr::new(192, 168, 1, 13)
                },
            ])
        );
        assert_eq!(
            desired.routes,
            BTreeSet::from([
                Route {
                    dst: v2,
                    prefix: 24,
                    gateway: v2
                },
                Route {
                    dst: v3,
                    prefix: 24,
                    gateway: v3
                },
            ])
        );
    }

    #[test]
    fn diff_adds_the_missing_and_removes_the_stale() {
        let all = plan("node1", &[flannel_node(2, MAC2), flannel_node(3, MAC3)]);
        let only2 = plan("node1", &[flannel_node(2, MAC2)]);
        let only3 = plan("node1", &[flannel_node(3, MAC3)]);

        assert!(diff(&all, &all).is_empty());
        assert_eq!(
            diff(&all, &Entries::default()),
            Changes {
                add: all.clone(),
                remove: Entries::default()
            }
        );
        assert_eq!(
            diff(&only2, &all),
            Changes {
                add: Entries::default(),
                remove: only3.clone()
            }
        );

        // node3 came back with a new device: its old MAC goes, the route stays.
        let moved = plan("node1", &[flannel_node(2, MAC2), flannel_node(3, [7; 6])]);
        let changes = diff(&moved, &all);
        assert_eq!(changes.remove.neighbours, only3.neighbours);
        assert_eq!(changes.remove.fdb, only3.fdb);
        assert!(changes.remove.routes.is_empty());
        assert_eq!(changes.add.neighbours.len(), 1);
        assert_eq!(changes.add.fdb.len(), 1);
        assert!(changes.add.routes.is_empty());
    }

    #[test]
    fn subnet_env_is_flannels() {
        assert_eq!(
            subnet_env(net("10.244.0.0/16"), net("10.244.1.0/24"), 1450, true),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
        );
        assert_eq!(
            subnet_env(net("10.1.0.0/16"), net("10.1.74.0/24"), 1400, false),
            "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n"
        );
    }

    #[test]
    fn masquerade_rules_are_flannels() {
        let expected = r#"*nat
:FLANNEL-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
COMMIT
"#;
        assert_eq!(
            masquerade_rules(net("10.244.0.0/16"), net("10.244.1.0/24"), false),
            expected
        );
        let again = masquerade_rules(net("10.244.0.0/16"), net("10.244.1.0/24"), true);
        assert_eq!(
            again,
            expected.replace(
                ":FLANNEL-POSTRTG - [0:0]\n",
                ":FLANNEL-POSTRTG - [0:0]\n-D POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n"
            )
        );
        assert_eq!(
            masquerade_jump_check().join(" "),
            "-t nat -C POSTROUTING -m comment --comment flanneld masq -j FLANNEL-POSTRTG"
        );
    }

    #[test]
    fn parses_cidrs_and_macs() {
        assert_eq!(
            parse_cidr("10.244.3.0/24"),
            Some(Ipv4Net {
                addr: Ipv4Addr::new(10, 244, 3, 0),
                prefix: 24
            })
        );
        for bad in ["10.244.3.0", "10.244.3.0/33", "x/24", "fd00::/64"] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
        assert_eq!(parse_mac("0a:58:0a:f4:02:00"), Some(MAC2));
        for bad in [
            "0a:58:0a:f4:02",
            "0a:58:0a:f4:02:00:01",
            "0a:58:0a:f4:2:00",
            "",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
