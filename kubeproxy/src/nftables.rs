//! The nftables proxier's rules, laid out as upstream kube-proxy (1.31) lays them out:
//! one `table ip kube-proxy` whose base chains jump to `services` (verdict maps
//! `service-ips` and `service-nodeports`), the no-endpoint maps checked from the filter
//! hooks, `cluster-ips-check`, `firewall-check` and the masquerading chains; then per
//! service port the `service-`, `local-`, `external-` and `endpoint-` chains named
//! `<prefix><hash>-<namespace>/<name>/<protocol>/<port>[__<ip>/<port>]`, load balanced
//! with `numgen random mod N vmap`, with `affinity-` sets for `ClientIP` affinity.
//!
//! [`plan`] is pure: the proxy's view in, a [`Ruleset`] out. [`Proxier`] turns the
//! difference between two rulesets into one `nft -f` transaction: the first sync (and
//! the one after a failure) deletes and rebuilds the table; later ones touch only
//! the map elements, sets and chains of the service ports that changed.

pub mod kernel;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use data_encoding::BASE32;

use crate::iptables::{self, MASQ_MARK};
use crate::model::{categorize, Endpoint, Protocol, ServicePort, ServicePortName, State};
use crate::proxier::{clear_stale_udp, SyncKind, UdpEndpoints};

/// The table every object of the proxy lives in.
pub const TABLE: &str = "kube-proxy";

const SERVICES: &str = "services";
const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const CLUSTER_IPS: &str = "cluster-ips";
const NODEPORT_IPS: &str = "nodeport-ips";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const FIREWALL_IPS: &str = "firewall-ips";
const REJECT_CHAIN: &str = "reject-chain";
const MARK_MASQ: &str = "mark-for-masquerade";
const MASQUERADING: &str = "masquerading";
const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";
const FIREWALL_CHECK: &str = "firewall-check";

/// The base chains: name, type, hook and priority (`dstnat` is -100, `srcnat` 100).
const BASE_CHAINS: [(&str, &str, &str, i32); 8] = [
    ("filter-prerouting", "filter", "prerouting", -110),
    ("filter-input", "filter", "input", -110),
    ("filter-forward", "filter", "forward", -110),
    ("filter-output", "filter", "output", -110),
    ("filter-output-post-dnat", "filter", "output", -90),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
];

/// The jumps from the base chains: to, from, matches; in upstream's order.
const JUMPS: [(&str, &str, &str); 11] = [
    (NODEPORT_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-forward", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-output", "ct state new"),
    (FIREWALL_CHECK, "filter-prerouting", "ct state new"),
    (FIREWALL_CHECK, "filter-output", "ct state new"),
    (SERVICES, "nat-output", ""),
    (SERVICES, "nat-prerouting", ""),
    (MASQUERADING, "nat-postrouting", ""),
    (CLUSTER_IPS_CHECK, "filter-forward", "ct state new"),
    (CLUSTER_IPS_CHECK, "filter-output-post-dnat", "ct state new"),
];

/// How this node proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: String,
    /// Traffic from outside it to a cluster IP is masqueraded (`--cluster-cidr`).
    pub cluster_cidr: Option<String>,
    /// Masquerade all traffic to cluster IPs (`--masquerade-all`).
    pub masquerade_all: bool,
    /// The addresses node ports answer on (`--nodeport-addresses`); when empty, every
    /// local address but loopback.
    pub node_port_addresses: Vec<Ipv4Addr>,
    /// The service CIDRs: traffic to an unallocated cluster IP in them is dropped.
    pub service_cidrs: Vec<String>,
    /// The node's IP: a source range that contains it also admits the node's own
    /// traffic to a load-balancer IP.
    pub node_ip: Option<Ipv4Addr>,
}

impl From<iptables::Config> for Config {
    fn from(config: iptables::Config) -> Config {
        Config {
            node: config.node,
            cluster_cidr: config.cluster_cidr,
            masquerade_all: config.masquerade_all,
            node_ip: config.node_ip,
            node_port_addresses: Vec::new(),
            service_cidrs: Vec::new(),
        }
    }
}

/// Kube-proxy's `hashAndTruncate`: the first 8 characters of the base32 SHA-256 of
/// `name`, a dash and `name`, cut to 240 characters.
fn hash_and_truncate(name: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hashed = format!("{}-{name}", &BASE32.encode(digest.as_ref())[..8]);
    if hashed.len() > 240 {
        format!("{}...", &hashed[..237])
    } else {
        hashed
    }
}

/// `HASH-namespace/name/protocol/port`, the base of a service port's chain names.
pub fn service_chain_base(name: &ServicePortName, protocol: Protocol) -> String {
    hash_and_truncate(&format!(
        "{}/{}/{}/{}",
        name.namespace,
        name.name,
        protocol.lower(),
        name.port
    ))
}

/// `HASH-namespace/name/protocol/port__ip/port`, the base of an endpoint's chain and
/// affinity set names.
pub fn endpoint_chain_base(
    name: &ServicePortName,
    protocol: Protocol,
    endpoint: &Endpoint,
) -> String {
    hash_and_truncate(&format!(
        "{}/{}/{}/{}__{}/{}",
        name.namespace,
        name.name,
        protocol.lower(),
        name.port,
        endpoint.ip,
        endpoint.port
    ))
}

/// An element of one of the proxy's sets or verdict maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub container: &'static str,
    /// `ip . proto . port`, `proto . port` or an address.
    pub key: String,
    pub comment: Option<String>,
    /// The verdict, for a map.
    pub value: Option<String>,
}

impl Element {
    fn new(container: &'static str, key: String, value: Option<String>) -> Element {
        Element {
            container,
            key,
            comment: None,
            value,
        }
    }

    fn render(&self) -> String {
        let mut out = format!("{} {{ {}", self.container, self.key);
        if let Some(comment) = &self.comment {
            let _ = write!(out, " comment \"{comment}\"");
        }
        if let Some(value) = &self.value {
            let _ = write!(out, " : {value}");
        }
        out.push_str(" }");
        out
    }
}

/// The objects of one service port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceObjects {
    /// The `affinity-` sets and their timeout in seconds.
    pub affinity_sets: Vec<(String, i32)>,
    /// The chains in the order they are created, each with its rules.
    pub chains: Vec<(String, Vec<String>)>,
    pub elements: Vec<Element>,
}

impl ServiceObjects {
    fn ensure_chain(&mut self, chain: &str) {
        if !self.chains.iter().any(|(c, _)| c == chain) {
            self.chains.push((chain.to_owned(), Vec::new()));
        }
    }

    fn rule(&mut self, chain: &str, rule: String) {
        self.ensure_chain(chain);
        if let Some((_, rules)) = self.chains.iter_mut().find(|(c, _)| c == chain) {
            rules.push(rule);
        }
    }
}

/// The rules of one sync: the table's fixed objects, and the objects of every
/// service port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The statements that create the table's fixed chains, sets and maps.
    pub base: Vec<String>,
    pub services: BTreeMap<ServicePortName, ServiceObjects>,
}

/// The rules for the proxy's view on this node.
pub fn plan(state: &State, config: &Config) -> Ruleset {
    Ruleset {
        base: base(config),
        services: state
            .iter()
            .map(|(name, (port, endpoints))| (name.clone(), service(port, endpoints, config)))
            .collect(),
    }
}

/// `setupNFTables`: the table, base chains, jumps, maps and sets.
fn base(config: &Config) -> Vec<String> {
    let mut out = vec![format!(
        "add table ip {TABLE} {{ comment \"rules for kube-proxy\" ; }}"
    )];
    let mut add = |what: &str, rest: String| out.push(format!("add {what} ip {TABLE} {rest}"));
    for (name, kind, hook, priority) in BASE_CHAINS {
        add(
            "chain",
            format!("{name} {{ type {kind} hook {hook} priority {priority} ; }}"),
        );
    }
    let mut created = BTreeSet::new();
    for (to, from, matches) in JUMPS {
        if created.insert(to) {
            add("chain", to.to_owned());
        }
        let rule = if matches.is_empty() {
            format!("jump {to}")
        } else {
            format!("{matches} jump {to}")
        };
        add("rule", format!("{from} {rule}"));
    }
    add("chain", MARK_MASQ.to_owned());
    add("rule", format!("{MARK_MASQ} mark set mark or {MASQ_MARK}"));
    add(
        "rule",
        format!("{MASQUERADING} mark and {MASQ_MARK} == 0 return"),
    );
    add(
        "rule",
        format!("{MASQUERADING} mark set mark xor {MASQ_MARK}"),
    );
    add("rule", format!("{MASQUERADING} masquerade fully-random"));
    add(
        "set",
        format!("{CLUSTER_IPS} {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"),
    );
    add(
        "rule",
        format!("{CLUSTER_IPS_CHECK} ip daddr @{CLUSTER_IPS} reject comment \"Reject traffic to invalid ports of ClusterIPs\""),
    );
    if !config.service_cidrs.is_empty() {
        add(
            "rule",
            format!(
                "{CLUSTER_IPS_CHECK} ip daddr {{ {} }} drop comment \"Drop traffic to unallocated ClusterIPs\"",
                config.service_cidrs.join(", ")
            ),
        );
    }
    let node_port_match = if config.node_port_addresses.is_empty() {
        "ip daddr != 127.0.0.0/8".to_owned()
    } else {
        add(
            "set",
            format!(
                "{NODEPORT_IPS} {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}"
            ),
        );
        for ip in &config.node_port_addresses {
            add("element", format!("{NODEPORT_IPS} {{ {ip} }}"));
        }
        format!("ip daddr @{NODEPORT_IPS}")
    };
    let vmap = |name: &str, key: &str, comment: &str| {
        format!("{name} {{ type {key} : verdict ; comment \"{comment}\" ; }}")
    };
    add(
        "map",
        vmap(
            NO_ENDPOINT_SERVICES,
            "ipv4_addr . inet_proto . inet_service",
            "vmap to drop or reject packets to services with no endpoints",
        ),
    );
    add(
        "map",
        vmap(
            NO_ENDPOINT_NODEPORTS,
            "inet_proto . inet_service",
            "vmap to drop or reject packets to service nodeports with no endpoints",
        ),
    );
    add(
        "chain",
        format!("{REJECT_CHAIN} {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}"),
    );
    add("rule", format!("{REJECT_CHAIN} reject"));
    add(
        "rule",
        format!("{SERVICE_ENDPOINTS_CHECK} ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"),
    );
    add(
        "rule",
        format!("{NODEPORT_ENDPOINTS_CHECK} {node_port_match} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"),
    );
    add(
        "map",
        vmap(
            FIREWALL_IPS,
            "ipv4_addr . inet_proto . inet_service",
            "destinations that are subject to LoadBalancerSourceRanges",
        ),
    );
    add(
        "rule",
        format!("{FIREWALL_CHECK} ip daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}"),
    );
    add(
        "map",
        vmap(
            SERVICE_IPS,
            "ipv4_addr . inet_proto . inet_service",
            "ClusterIP, ExternalIP and LoadBalancer IP traffic",
        ),
    );
    add(
        "map",
        vmap(
            SERVICE_NODEPORTS,
            "inet_proto . inet_service",
            "NodePort traffic",
        ),
    );
    add(
        "rule",
        format!("{SERVICES} ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
    );
    let node_port_dispatch = if config.node_port_addresses.is_empty() {
        format!("fib daddr type local {node_port_match}")
    } else {
        node_port_match
    };
    add(
        "rule",
        format!(
            "{SERVICES} {node_port_dispatch} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"
        ),
    );
    out
}

/// The objects of one service port, as `syncProxyRules` writes them.
fn service(port: &ServicePort, endpoints: &[Endpoint], config: &Config) -> ServiceObjects {
    let mut objects = ServiceObjects::default();
    let proto = port.protocol.lower();
    let name = port.name.to_string();
    let base = service_chain_base(&port.name, port.protocol);
    let cluster_chain = format!("service-{base}");
    let local_chain = format!("local-{base}");
    let external_chain = format!("external-{base}");
    let firewall_chain = format!("firewall-{base}");
    let categorized = categorize(port, endpoints, &config.node);
    let endpoint_base = |e: &Endpoint| endpoint_chain_base(&port.name, port.protocol, e);

    for endpoint in &categorized.reachable {
        objects.ensure_chain(&format!("endpoint-{}", endpoint_base(endpoint)));
    }
    let uses_cluster_chain = !categorized.cluster.is_empty() && port.uses_cluster_endpoints();
    if uses_cluster_chain {
        objects.ensure_chain(&cluster_chain);
    }
    let uses_local_chain = !categorized.local.is_empty() && port.uses_local_endpoints();
    if uses_local_chain {
        objects.ensure_chain(&local_chain);
    }
    let has_endpoints = categorized.any;
    let (internal_chain, has_internal) = if port.internal_policy_local {
        (&local_chain, has_endpoints && !categorized.local.is_empty())
    } else {
        (&cluster_chain, has_endpoints)
    };
    let (external_policy, has_external) = if port.external_policy_local {
        (&local_chain, has_endpoints && !categorized.local.is_empty())
    } else {
        (&cluster_chain, has_endpoints)
    };
    let uses_external_chain = has_endpoints && port.externally_accessible();
    if uses_external_chain {
        objects.ensure_chain(&external_chain);
    }
    let reject = format!("goto {REJECT_CHAIN}");
    let (internal_verdict, external_verdict) = if has_endpoints {
        ("drop".to_owned(), "drop".to_owned())
    } else {
        (reject.clone(), reject)
    };
    let no_endpoints = |container, key: String, verdict: &str| Element {
        container,
        key,
        comment: Some(name.clone()),
        value: Some(verdict.to_owned()),
    };
    let goto = |chain: &str| Some(format!("goto {chain}"));
    let ip_key = |ip: Ipv4Addr| format!("{ip} . {proto} . {}", port.port);

    objects
        .elements
        .push(Element::new(CLUSTER_IPS, port.cluster_ip.to_string(), None));
    if has_internal {
        objects.elements.push(Element::new(
            SERVICE_IPS,
            ip_key(port.cluster_ip),
            goto(internal_chain),
        ));
    } else {
        objects.elements.push(no_endpoints(
            NO_ENDPOINT_SERVICES,
            ip_key(port.cluster_ip),
            &internal_verdict,
        ));
    }
    for ip in &port.external_ips {
        if has_endpoints {
            objects.elements.push(Element::new(
                SERVICE_IPS,
                ip_key(*ip),
                goto(&external_chain),
            ));
        }
        if !has_external {
            objects.elements.push(no_endpoints(
                NO_ENDPOINT_SERVICES,
                ip_key(*ip),
                &external_verdict,
            ));
        }
    }
    let uses_firewall = !port.load_balancer_ips.is_empty() && !port.source_ranges.is_empty();
    if uses_firewall {
        objects.ensure_chain(&firewall_chain);
        let mut sources: Vec<String> = port.source_ranges.iter().map(|c| c.to_string()).collect();
        if config
            .node_ip
            .is_some_and(|node| port.source_ranges.iter().any(|c| c.contains(node)))
        {
            sources.extend(port.load_balancer_ips.iter().map(|ip| ip.to_string()));
        }
        objects.rule(
            &firewall_chain,
            format!("ip saddr != {{ {} }} drop", sources.join(", ")),
        );
    }
    for ip in &port.load_balancer_ips {
        if has_endpoints {
            objects.elements.push(Element::new(
                SERVICE_IPS,
                ip_key(*ip),
                goto(&external_chain),
            ));
        }
        if uses_firewall {
            objects.elements.push(Element {
                container: FIREWALL_IPS,
                key: ip_key(*ip),
                comment: Some(name.clone()),
                value: goto(&firewall_chain),
            });
        }
    }
    if !has_external {
        for ip in &port.load_balancer_ips {
            objects.elements.push(no_endpoints(
                NO_ENDPOINT_SERVICES,
                ip_key(*ip),
                &external_verdict,
            ));
        }
    }
    if let Some(node_port) = port.node_port {
        let key = format!("{proto} . {node_port}");
        if has_endpoints {
            objects.elements.push(Element::new(
                SERVICE_NODEPORTS,
                key.clone(),
                goto(&external_chain),
            ));
        }
        if !has_external {
            objects
                .elements
                .push(no_endpoints(NO_ENDPOINT_NODEPORTS, key, &external_verdict));
        }
    }

    if has_internal {
        let target = format!("ip daddr {} {proto} dport {}", port.cluster_ip, port.port);
        if config.masquerade_all {
            objects.rule(internal_chain, format!("{target} jump {MARK_MASQ}"));
        } else if let Some(cidr) = &config.cluster_cidr {
            objects.rule(
                internal_chain,
                format!("{target} ip saddr != {cidr} jump {MARK_MASQ}"),
            );
        }
    }
    if uses_external_chain {
        if !port.external_policy_local {
            objects.rule(&external_chain, format!("jump {MARK_MASQ}"));
        } else {
            if let Some(cidr) = &config.cluster_cidr {
                objects.rule(
                    &external_chain,
                    format!("ip saddr {cidr} goto {cluster_chain} comment \"short-circuit pod traffic\""),
                );
            }
            objects.rule(
                &external_chain,
                format!(
                    "fib saddr type local jump {MARK_MASQ} comment \"masquerade local traffic\""
                ),
            );
            objects.rule(
                &external_chain,
                format!("fib saddr type local goto {cluster_chain} comment \"short-circuit local traffic\""),
            );
        }
        if has_external {
            objects.rule(&external_chain, format!("goto {external_policy}"));
        }
    }
    if let Some(timeout) = port.affinity_seconds {
        for endpoint in &categorized.reachable {
            objects
                .affinity_sets
                .push((format!("affinity-{}", endpoint_base(endpoint)), timeout));
        }
    }
    let mut balance = |chain: &str, endpoints: &[Endpoint]| {
        if port.affinity_seconds.is_some() {
            for endpoint in endpoints {
                let base = endpoint_base(endpoint);
                objects.rule(
                    chain,
                    format!("ip saddr @affinity-{base} goto endpoint-{base}"),
                );
            }
        }
        let targets: Vec<String> = endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{i} : goto endpoint-{}", endpoint_base(e)))
            .collect();
        objects.rule(
            chain,
            format!(
                "numgen random mod {} vmap {{ {} }}",
                endpoints.len(),
                targets.join(" , ")
            ),
        );
    };
    if uses_cluster_chain {
        balance(&cluster_chain, &categorized.cluster);
    }
    if uses_local_chain {
        balance(&local_chain, &categorized.local);
    }
    for endpoint in &categorized.reachable {
        let base = endpoint_base(endpoint);
        let chain = format!("endpoint-{base}");
        objects.rule(&chain, format!("ip saddr {} jump {MARK_MASQ}", endpoint.ip));
        if port.affinity_seconds.is_some() {
            objects.rule(&chain, format!("update @affinity-{base} {{ ip saddr }}"));
        }
        objects.rule(&chain, format!("meta l4proto {proto} dnat to {endpoint}"));
    }
    objects
}

/// Every element of the service ports, by container and key.
fn elements(
    services: &BTreeMap<ServicePortName, ServiceObjects>,
) -> BTreeMap<(&'static str, &str), &Element> {
    services
        .values()
        .flat_map(|s| &s.elements)
        .map(|e| ((e.container, e.key.as_str()), e))
        .collect()
}

fn chains(services: &BTreeMap<ServicePortName, ServiceObjects>) -> BTreeSet<&str> {
    services
        .values()
        .flat_map(|s| &s.chains)
        .map(|(c, _)| c.as_str())
        .collect()
}

fn affinity_sets(services: &BTreeMap<ServicePortName, ServiceObjects>) -> BTreeMap<&str, i32> {
    services
        .values()
        .flat_map(|s| &s.affinity_sets)
        .map(|(name, timeout)| (name.as_str(), *timeout))
        .collect()
}

/// What the kernel has of the proxy's per-service objects after a sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Applied {
    services: BTreeMap<ServicePortName, ServiceObjects>,
    /// Chains that went stale and were flushed; deleted by the next sync, once the
    /// kernel has let go of the map elements that pointed at them.
    flushed: BTreeSet<String>,
}

/// The statements that bring the kernel from `previous` (nothing known: rebuild the
/// table) to `rules`.
fn render(rules: &Ruleset, previous: Option<&Applied>) -> (String, BTreeSet<String>) {
    let empty = Applied::default();
    let mut out = Vec::new();
    let old = match previous {
        Some(applied) => applied,
        None => {
            out.push(format!("add table ip {TABLE}"));
            out.push(format!("delete table ip {TABLE}"));
            out.extend(rules.base.iter().cloned());
            &empty
        }
    };
    let stmt = |what: &str, rest: &str| format!("{what} ip {TABLE} {rest}");
    let old_chains = chains(&old.services);
    let new_chains = chains(&rules.services);
    for chain in old.flushed.iter().map(String::as_str) {
        if !new_chains.contains(chain) {
            out.push(stmt("delete chain", chain));
        }
    }
    let existing: BTreeSet<&str> = old_chains
        .iter()
        .copied()
        .chain(old.flushed.iter().map(String::as_str))
        .collect();
    let changed: Vec<&ServiceObjects> = rules
        .services
        .iter()
        .filter(|(name, objects)| old.services.get(*name) != Some(*objects))
        .map(|(_, objects)| objects)
        .collect();
    for objects in &changed {
        for (chain, _) in &objects.chains {
            out.push(stmt("add chain", chain));
            if existing.contains(chain.as_str()) {
                out.push(stmt("flush chain", chain));
            }
        }
    }
    let stale: BTreeSet<String> = old_chains
        .difference(&new_chains)
        .map(|c| (*c).to_owned())
        .collect();
    for chain in &stale {
        out.push(stmt("flush chain", chain));
    }
    let old_elements = elements(&old.services);
    let new_elements = elements(&rules.services);
    for (key, element) in &old_elements {
        if new_elements.get(key) != Some(element) {
            out.push(stmt(
                "delete element",
                &format!("{} {{ {} }}", element.container, element.key),
            ));
        }
    }
    let old_sets = affinity_sets(&old.services);
    let new_sets = affinity_sets(&rules.services);
    for (set, timeout) in &old_sets {
        if new_sets.get(set) != Some(timeout) {
            out.push(stmt("delete set", set));
        }
    }
    for (set, timeout) in &new_sets {
        if old_sets.get(set) != Some(timeout) {
            out.push(stmt(
                "add set",
                &format!(
                    "{set} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}"
                ),
            ));
        }
    }
    for objects in &changed {
        for (chain, chain_rules) in &objects.chains {
            for rule in chain_rules {
                out.push(stmt("add rule", &format!("{chain} {rule}")));
            }
        }
    }
    for (key, element) in &new_elements {
        if old_elements.get(key) != Some(element) {
            out.push(stmt("add element", &element.render()));
        }
    }
    let mut text = out.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    (text, stale)
}

/// Every statement that creates `rules` from nothing, as upstream's fake nftables
/// dumps a table.
pub fn dump(rules: &Ruleset) -> String {
    let (text, _) = render(rules, None);
    text.lines().skip(2).map(|l| format!("{l}\n")).collect()
}

/// One sync's transaction, and what the kernel has once it ran.
#[derive(Debug, Clone)]
pub struct Transaction {
    pub kind: SyncKind,
    /// The `nft -f` input; empty when nothing changed.
    pub text: String,
    applied: Applied,
}

impl Transaction {
    /// The number of statements.
    pub fn lines(&self) -> usize {
        self.text.lines().count()
    }
}

/// What the nftables proxier remembers between syncs.
pub struct Proxier {
    config: Config,
    /// What the kernel has, when known; a full sync rebuilds the table otherwise.
    applied: Option<Applied>,
    udp: UdpEndpoints,
}

impl Proxier {
    pub fn new(config: Config) -> Proxier {
        Proxier {
            config,
            applied: None,
            udp: UdpEndpoints::new(),
        }
    }

    /// Makes the next sync rebuild the table.
    pub fn force_full(&mut self) {
        self.applied = None;
    }

    /// The transaction that brings the kernel to `state`, full when what the kernel
    /// has is unknown.
    pub fn transaction(&self, state: &State) -> Transaction {
        let rules = plan(state, &self.config);
        let (text, flushed) = render(&rules, self.applied.as_ref());
        Transaction {
            kind: if self.applied.is_some() {
                SyncKind::Partial
            } else {
                SyncKind::Full
            },
            text,
            applied: Applied {
                services: rules.services,
                flushed,
            },
        }
    }

    fn commit(&mut self, transaction: Transaction) {
        self.applied = Some(transaction.applied);
    }

    /// Applies the rules of `state` in one transaction.
    pub async fn sync(&mut self, state: &State) -> crate::kernel::Result<SyncKind> {
        let transaction = self.transaction(state);
        tracing::debug!(kind = ?transaction.kind, lines = transaction.lines(), "nftables transaction");
        if !transaction.text.is_empty() {
            if let Err(err) = kernel::apply(&transaction.text).await {
                self.force_full();
                return Err(err);
            }
        }
        let kind = transaction.kind;
        self.commit(transaction);
        clear_stale_udp(&mut self.udp, state).await;
        Ok(kind)
    }
}

#[cfg(test)]
mod tests;
