//! The iptables proxier's rules, laid out as upstream kube-proxy lays them out: the
//! chain names (`KUBE-SVC-`, `KUBE-SEP-`, `KUBE-EXT-`, `KUBE-SVL-` and a hash), the
//! comments, the order of the matches and the statistic probabilities, so what a
//! node's `iptables-save` shows is what the Kubernetes documentation shows.
//!
//! [`plan`] is pure: the proxy's view in, the rules out. [`render`] writes the
//! `iptables-restore --noflush` input of a full or a partial sync.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use data_encoding::BASE32;

use crate::model::{categorize, Endpoint, Protocol, ServicePort, ServicePortName, State};

/// The mark of packets to masquerade.
pub const MASQ_MARK: &str = "0x4000";
/// The chain kube-proxy creates in every table to notice that they were flushed.
pub const CANARY: &str = "KUBE-PROXY-CANARY";

pub const KUBE_SERVICES: &str = "KUBE-SERVICES";
pub const KUBE_EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
pub const KUBE_NODEPORTS: &str = "KUBE-NODEPORTS";
pub const KUBE_POSTROUTING: &str = "KUBE-POSTROUTING";
pub const KUBE_MARK_MASQ: &str = "KUBE-MARK-MASQ";
pub const KUBE_FORWARD: &str = "KUBE-FORWARD";
pub const KUBE_PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";

/// The top-level chains of each table, in the order kube-proxy declares them.
pub const FILTER_CHAINS: [&str; 5] = [
    KUBE_SERVICES,
    KUBE_EXTERNAL_SERVICES,
    KUBE_FORWARD,
    KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL,
];
pub const NAT_CHAINS: [&str; 4] = [
    KUBE_SERVICES,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_MARK_MASQ,
];

/// The prefixes of the per-service chains this proxy owns.
pub const SERVICE_CHAIN_PREFIXES: [&str; 5] = [
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-SEP-",
];

/// A jump from a built-in chain into the proxy's chains, kept outside the restore
/// input as kube-proxy keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    pub table: &'static str,
    pub from: &'static str,
    pub to: &'static str,
    pub args: Vec<&'static str>,
}

/// The jumps kube-proxy ensures, in its order.
pub fn jumps() -> Vec<Jump> {
    let new = ["-m", "conntrack", "--ctstate", "NEW"];
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
    vec![
        jump(
            "filter",
            "INPUT",
            KUBE_PROXY_FIREWALL,
            &new,
            "kubernetes load balancer firewall",
        ),
        jump(
            "filter",
            "INPUT",
            KUBE_NODEPORTS,
            &[],
            "kubernetes health check service ports",
        ),
        jump(
            "filter",
            "INPUT",
            KUBE_EXTERNAL_SERVICES,
            &new,
            "kubernetes externally-visible service portals",
        ),
        jump(
            "filter",
            "FORWARD",
            KUBE_PROXY_FIREWALL,
            &new,
            "kubernetes load balancer firewall",
        ),
        jump(
            "filter",
            "FORWARD",
            KUBE_FORWARD,
            &[],
            "kubernetes forwarding rules",
        ),
        jump(
            "filter",
            "FORWARD",
            KUBE_SERVICES,
            &new,
            "kubernetes service portals",
        ),
        jump(
            "filter",
            "FORWARD",
            KUBE_EXTERNAL_SERVICES,
            &new,
            "kubernetes externally-visible service portals",
        ),
        jump(
            "filter",
            "OUTPUT",
            KUBE_PROXY_FIREWALL,
            &new,
            "kubernetes load balancer firewall",
        ),
        jump(
            "filter",
            "OUTPUT",
            KUBE_SERVICES,
            &new,
            "kubernetes service portals",
        ),
        jump(
            "nat",
            "OUTPUT",
            KUBE_SERVICES,
            &[],
            "kubernetes service portals",
        ),
        jump(
            "nat",
            "PREROUTING",
            KUBE_SERVICES,
            &[],
            "kubernetes service portals",
        ),
        jump(
            "nat",
            "POSTROUTING",
            KUBE_POSTROUTING,
            &[],
            "kubernetes postrouting rules",
        ),
    ]
}

/// The first 16 characters of the base32 SHA-256 of `text`, kube-proxy's chain hash.
fn hash16(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    BASE32.encode(digest.as_ref())[..16].to_owned()
}

/// `KUBE-SVC-…` (and the other per-service prefixes) for a service port.
pub fn service_chain(prefix: &str, name: &ServicePortName, protocol: Protocol) -> String {
    format!("{prefix}{}", hash16(&format!("{name}{}", protocol.lower())))
}

/// `KUBE-SEP-…` for one endpoint of a service port.
pub fn endpoint_chain(name: &ServicePortName, protocol: Protocol, endpoint: &Endpoint) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!("{name}{}{endpoint}", protocol.lower()))
    )
}

/// How this node proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub node: String,
    /// Traffic from outside it to a cluster IP is masqueraded (`--cluster-cidr`).
    pub cluster_cidr: Option<String>,
    /// Masquerade all traffic to cluster IPs (`--masquerade-all`).
    pub masquerade_all: bool,
    /// The node's IP: a source range that contains it also admits the node's own
    /// traffic to a load-balancer IP, which leaves with that IP as its source.
    pub node_ip: Option<std::net::Ipv4Addr>,
}

/// The rules of one sync: the top-level chains of both tables in full, and the
/// per-service chains of the nat table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub filter: BTreeMap<&'static str, Vec<String>>,
    pub nat: BTreeMap<&'static str, Vec<String>>,
    pub services: BTreeMap<String, Vec<String>>,
}

/// A comment argument, quoted when it has a space, as kube-proxy writes it.
fn comment(text: &str) -> String {
    if text.contains(' ') {
        format!("-m comment --comment \"{text}\"")
    } else {
        format!("-m comment --comment {text}")
    }
}

/// Kube-proxy's statistic probability, `1/n` with 10 decimals.
pub fn probability(n: usize) -> String {
    format!("{:0.10}", 1.0 / n as f64)
}

/// The rules for the proxy's view on this node.
pub fn plan(state: &State, config: &Config) -> Ruleset {
    let mut rules = Ruleset::default();
    for chain in FILTER_CHAINS {
        rules.filter.insert(chain, Vec::new());
    }
    for chain in NAT_CHAINS {
        rules.nat.insert(chain, Vec::new());
    }
    let mut filter = |chain: &'static str, rule: String| {
        rules
            .filter
            .entry(chain)
            .or_default()
            .push(format!("-A {chain} {rule}"));
    };
    filter(
        KUBE_FORWARD,
        "-m conntrack --ctstate INVALID -j DROP".to_owned(),
    );
    filter(
        KUBE_FORWARD,
        format!(
            "{} -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT",
            comment("kubernetes forwarding rules")
        ),
    );
    filter(
        KUBE_FORWARD,
        format!(
            "{} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            comment("kubernetes forwarding conntrack rule")
        ),
    );
    let mut nat_top: Vec<(&'static str, String)> = vec![
        (
            KUBE_POSTROUTING,
            format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
        ),
        (KUBE_POSTROUTING, format!("-j MARK --xor-mark {MASQ_MARK}")),
        (
            KUBE_POSTROUTING,
            format!(
                "{} -j MASQUERADE --random-fully",
                comment("kubernetes service traffic requiring SNAT")
            ),
        ),
        (KUBE_MARK_MASQ, format!("-j MARK --or-mark {MASQ_MARK}")),
    ];
    let mut filter_rules: Vec<(&'static str, String)> = Vec::new();
    for (port, endpoints) in state.values() {
        service_rules(
            port,
            endpoints,
            config,
            &mut nat_top,
            &mut filter_rules,
            &mut rules.services,
        );
    }
    nat_top.push((
        KUBE_SERVICES,
        format!(
            "{} -m addrtype --dst-type LOCAL -j {KUBE_NODEPORTS}",
            comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
        ),
    ));
    for (chain, rule) in filter_rules {
        rules
            .filter
            .entry(chain)
            .or_default()
            .push(format!("-A {chain} {rule}"));
    }
    for (chain, rule) in nat_top {
        rules
            .nat
            .entry(chain)
            .or_default()
            .push(format!("-A {chain} {rule}"));
    }
    rules
}

fn service_rules(
    port: &ServicePort,
    endpoints: &[Endpoint],
    config: &Config,
    nat: &mut Vec<(&'static str, String)>,
    filter: &mut Vec<(&'static str, String)>,
    chains: &mut BTreeMap<String, Vec<String>>,
) {
    let name = port.name.to_string();
    let proto = port.protocol.lower();
    let matches = format!("-m {proto} -p {proto}");
    let categorized = categorize(port, endpoints, &config.node);
    let cluster_chain = service_chain("KUBE-SVC-", &port.name, port.protocol);
    let local_chain = service_chain("KUBE-SVL-", &port.name, port.protocol);
    let external_chain = service_chain("KUBE-EXT-", &port.name, port.protocol);

    let has_endpoints = categorized.any;
    let mut has_internal = has_endpoints;
    let mut internal_policy = cluster_chain.clone();
    if port.internal_policy_local {
        internal_policy = local_chain.clone();
        has_internal = has_internal && !categorized.local.is_empty();
    }
    let mut has_external = has_endpoints;
    let mut external_policy = cluster_chain.clone();
    if port.external_policy_local {
        external_policy = local_chain.clone();
        has_external = has_external && !categorized.local.is_empty();
    }
    let external_target = if port.externally_accessible() {
        external_chain.clone()
    } else {
        external_policy.clone()
    };
    let (internal_filter, external_filter) = if !has_endpoints {
        let reject = ("REJECT", format!("{name} has no endpoints"));
        (Some(reject.clone()), Some(reject))
    } else {
        let drop = ("DROP", format!("{name} has no local endpoints"));
        (
            (!has_internal).then(|| drop.clone()),
            (!has_external).then_some(drop),
        )
    };
    let dport = port.port;

    if has_internal {
        nat.push((
            KUBE_SERVICES,
            format!(
                "{} {matches} -d {} --dport {dport} -j {internal_policy}",
                comment(&format!("{name} cluster IP")),
                port.cluster_ip
            ),
        ));
    } else if let Some((target, why)) = &internal_filter {
        filter.push((
            KUBE_SERVICES,
            format!(
                "{} {matches} -d {} --dport {dport} -j {target}",
                comment(why),
                port.cluster_ip
            ),
        ));
    }
    for ip in &port.external_ips {
        if has_endpoints {
            nat.push((
                KUBE_SERVICES,
                format!(
                    "{} {matches} -d {ip} --dport {dport} -j {external_target}",
                    comment(&format!("{name} external IP"))
                ),
            ));
        }
        if let Some((target, why)) = &external_filter {
            filter.push((
                KUBE_EXTERNAL_SERVICES,
                format!(
                    "{} {matches} -d {ip} --dport {dport} -j {target}",
                    comment(why)
                ),
            ));
        }
    }
    let firewall_chain = service_chain("KUBE-FW-", &port.name, port.protocol);
    let uses_firewall =
        has_endpoints && !port.load_balancer_ips.is_empty() && !port.source_ranges.is_empty();
    let load_balancer_target = if uses_firewall {
        &firewall_chain
    } else {
        &external_target
    };
    for ip in &port.load_balancer_ips {
        if has_endpoints {
            nat.push((
                KUBE_SERVICES,
                format!(
                    "{} {matches} -d {ip} --dport {dport} -j {load_balancer_target}",
                    comment(&format!("{name} loadbalancer IP"))
                ),
            ));
        }
        if uses_firewall {
            filter.push((
                KUBE_PROXY_FIREWALL,
                format!(
                    "{} {matches} -d {ip} --dport {dport} -j DROP",
                    comment(&format!("{name} traffic not accepted by {firewall_chain}"))
                ),
            ));
        }
    }
    if let Some((target, why)) = &external_filter {
        for ip in &port.load_balancer_ips {
            filter.push((
                KUBE_EXTERNAL_SERVICES,
                format!(
                    "{} {matches} -d {ip} --dport {dport} -j {target}",
                    comment(why)
                ),
            ));
        }
    }
    if let Some(node_port) = port.node_port {
        if has_endpoints {
            nat.push((
                KUBE_NODEPORTS,
                format!(
                    "{} {matches} --dport {node_port} -j {external_target}",
                    comment(&name)
                ),
            ));
        }
        if let Some((target, why)) = &external_filter {
            filter.push((
                KUBE_EXTERNAL_SERVICES,
                format!(
                    "{} -m addrtype --dst-type LOCAL {matches} --dport {node_port} -j {target}",
                    comment(why)
                ),
            ));
        }
    }
    if let Some(health) = port.health_check_node_port {
        filter.push((
            KUBE_NODEPORTS,
            format!(
                "{} -m tcp -p tcp --dport {health} -j ACCEPT",
                comment(&format!("{name} health check node port"))
            ),
        ));
    }

    if has_endpoints && port.externally_accessible() {
        let mut ext = Vec::new();
        let mut push = |rule: String| ext.push(format!("-A {external_chain} {rule}"));
        if !port.external_policy_local {
            push(format!(
                "{} -j {KUBE_MARK_MASQ}",
                comment(&format!(
                    "masquerade traffic for {name} external destinations"
                ))
            ));
        } else {
            if let Some(cidr) = &config.cluster_cidr {
                push(format!(
                    "{} -s {cidr} -j {cluster_chain}",
                    comment(&format!("pod traffic for {name} external destinations"))
                ));
            }
            push(format!(
                "{} -m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}",
                comment(&format!(
                    "masquerade LOCAL traffic for {name} external destinations"
                ))
            ));
            push(format!(
                "{} -m addrtype --src-type LOCAL -j {cluster_chain}",
                comment(&format!(
                    "route LOCAL traffic for {name} external destinations"
                ))
            ));
        }
        if has_external {
            push(format!("-j {external_policy}"));
        }
        chains.insert(external_chain.clone(), ext);
    }
    if uses_firewall {
        let tag = comment(&format!("{name} loadbalancer IP"));
        let mut fw: Vec<String> = port
            .source_ranges
            .iter()
            .map(|cidr| format!("-A {firewall_chain} {tag} -s {cidr} -j {external_chain}"))
            .collect();
        let allow_from_node = config
            .node_ip
            .is_some_and(|node| port.source_ranges.iter().any(|c| c.contains(node)));
        if allow_from_node {
            fw.extend(
                port.load_balancer_ips
                    .iter()
                    .map(|ip| format!("-A {firewall_chain} {tag} -s {ip} -j {external_chain}")),
            );
        }
        fw.push(format!(
            "-A {firewall_chain} {}",
            comment(&format!(
                "other traffic to {name} will be dropped by {KUBE_PROXY_FIREWALL}"
            ))
        ));
        chains.insert(firewall_chain, fw);
    }
    if !categorized.cluster.is_empty() && port.uses_cluster_endpoints() {
        let mut svc = Vec::new();
        let masq = if config.masquerade_all {
            Some(String::new())
        } else {
            config
                .cluster_cidr
                .as_ref()
                .map(|cidr| format!(" ! -s {cidr}"))
        };
        if let Some(source) = masq {
            svc.push(format!(
                "-A {cluster_chain} {} {matches} -d {} --dport {dport}{source} -j {KUBE_MARK_MASQ}",
                comment(&format!("{name} cluster IP")),
                port.cluster_ip
            ));
        }
        balance(port, &cluster_chain, &categorized.cluster, &mut svc);
        chains.insert(cluster_chain.clone(), svc);
    }
    if !categorized.local.is_empty() && port.uses_local_endpoints() {
        let mut svl = Vec::new();
        balance(port, &local_chain, &categorized.local, &mut svl);
        chains.insert(local_chain, svl);
    }
    for endpoint in &categorized.reachable {
        let chain = endpoint_chain(&port.name, port.protocol, endpoint);
        let tag = comment(&name);
        let mut sep = vec![format!(
            "-A {chain} {tag} -s {} -j {KUBE_MARK_MASQ}",
            endpoint.ip
        )];
        let affinity = if port.affinity_seconds.is_some() {
            format!(" -m recent --name {chain} --set")
        } else {
            String::new()
        };
        sep.push(format!(
            "-A {chain} {tag}{affinity} {matches} -j DNAT --to-destination {endpoint}"
        ));
        chains.insert(chain, sep);
    }
}

/// The session-affinity and load-balancing rules of a service chain.
fn balance(port: &ServicePort, chain: &str, endpoints: &[Endpoint], out: &mut Vec<String>) {
    let name = &port.name;
    if let Some(seconds) = port.affinity_seconds {
        for endpoint in endpoints {
            let target = endpoint_chain(name, port.protocol, endpoint);
            out.push(format!(
                "-A {chain} {} -m recent --name {target} --rcheck --seconds {seconds} --reap -j {target}",
                comment(&format!("{name} -> {endpoint}"))
            ));
        }
    }
    let n = endpoints.len();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let target = endpoint_chain(name, port.protocol, endpoint);
        let statistic = if i + 1 < n {
            format!(
                " -m statistic --mode random --probability {}",
                probability(n - i)
            )
        } else {
            String::new()
        };
        out.push(format!(
            "-A {chain} {}{statistic} -j {target}",
            comment(&format!("{name} -> {endpoint}"))
        ));
    }
}

/// Which per-service chains a sync writes and which it deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Chains written (flushed and refilled).
    pub write: BTreeSet<String>,
    /// Chains deleted (no longer used).
    pub delete: BTreeSet<String>,
}

impl Selection {
    /// Every chain of `rules`, and `existing` chains the rules no longer have.
    pub fn full(rules: &Ruleset, existing: &BTreeSet<String>) -> Selection {
        Selection {
            write: rules.services.keys().cloned().collect(),
            delete: existing
                .iter()
                .filter(|c| !rules.services.contains_key(*c))
                .cloned()
                .collect(),
        }
    }

    /// The chains that differ from what the previous sync wrote.
    pub fn partial(rules: &Ruleset, previous: &BTreeMap<String, Vec<String>>) -> Selection {
        Selection {
            write: rules
                .services
                .iter()
                .filter(|(chain, body)| previous.get(*chain) != Some(*body))
                .map(|(chain, _)| chain.clone())
                .collect(),
            delete: previous
                .keys()
                .filter(|c| !rules.services.contains_key(*c))
                .cloned()
                .collect(),
        }
    }
}

/// The `iptables-restore --noflush` input: both tables' top-level chains in full,
/// the selected per-service chains, and the deletions.
pub fn render(rules: &Ruleset, selection: &Selection) -> String {
    let mut out = String::from("*filter\n");
    for chain in FILTER_CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for chain in FILTER_CHAINS {
        for rule in rules.filter.get(chain).into_iter().flatten() {
            let _ = writeln!(out, "{rule}");
        }
    }
    out.push_str("COMMIT\n*nat\n");
    for chain in NAT_CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for chain in selection.write.iter().chain(&selection.delete) {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    for chain in NAT_CHAINS {
        for rule in rules.nat.get(chain).into_iter().flatten() {
            let _ = writeln!(out, "{rule}");
        }
    }
    for chain in &selection.write {
        for rule in rules.services.get(chain).into_iter().flatten() {
            let _ = writeln!(out, "{rule}");
        }
    }
    for chain in &selection.delete {
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n");
    out
}

/// The per-service chains in an `iptables-save -t nat` output.
pub fn service_chains_in(save: &str) -> BTreeSet<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| SERVICE_CHAIN_PREFIXES.iter().any(|p| c.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests;
