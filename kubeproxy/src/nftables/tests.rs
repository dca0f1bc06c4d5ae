//! The planner checked against upstream's `pkg/proxy/nftables/proxier_test.go`: the
//! same Services and EndpointSlices give the same statements, compared as upstream's
//! `assertNFTablesTransactionEqual` compares them (by object, rules in order).

use std::net::Ipv4Addr;

use super::*;
use crate::model::{Endpoint, Protocol, ServicePort, ServicePortName, State};

fn name(ns: &str, svc: &str, port: &str) -> ServicePortName {
    ServicePortName {
        namespace: ns.into(),
        name: svc.into(),
        port: port.into(),
    }
}

fn service(ns: &str, svc: &str, ip: &str) -> ServicePort {
    ServicePort {
        name: name(ns, svc, "p80"),
        protocol: Protocol::Tcp,
        cluster_ip: ip.parse().expect("ip"),
        port: 80,
        node_port: None,
        external_ips: Vec::new(),
        load_balancer_ips: Vec::new(),
        affinity_seconds: None,
        external_policy_local: false,
        internal_policy_local: false,
        health_check_node_port: None,
        source_ranges: Vec::new(),
    }
}

fn endpoint(ip: &str, node: Option<&str>) -> Endpoint {
    Endpoint {
        ip: ip.parse::<Ipv4Addr>().expect("ip"),
        port: 80,
        ready: true,
        serving: true,
        terminating: false,
        node: node.map(str::to_owned),
    }
}

/// Upstream's `NewFakeProxier`: pods in 10.0.0.0/8, services in 172.30.0.0/16, node
/// ports on 192.168.0.2.
fn config() -> Config {
    Config {
        node: "test-node".into(),
        cluster_cidr: Some("10.0.0.0/8".into()),
        masquerade_all: false,
        node_ip: None,
        node_port_addresses: vec![Ipv4Addr::new(192, 168, 0, 2)],
        service_cidrs: vec!["172.30.0.0/16".into()],
    }
}

fn state(entries: Vec<(ServicePort, Vec<Endpoint>)>) -> State {
    entries
        .into_iter()
        .map(|(p, e)| (p.name.clone(), (p, e)))
        .collect()
}

/// Upstream's `sortNFTablesTransaction`: objects by type, then name; rules of a
/// chain keep their order; blank and `#` lines dropped.
fn normalize(text: &str) -> Vec<String> {
    let order = |kind: &str| match kind {
        "table" => 0,
        "chain" => 1,
        "set" => 2,
        "map" => 3,
        "element" => 4,
        _ => 5,
    };
    let mut lines: Vec<(usize, String)> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .enumerate()
        .collect();
    lines.sort_by(|(i, a), (j, b)| {
        let wa: Vec<&str> = a.split(' ').collect();
        let wb: Vec<&str> = b.split(' ').collect();
        order(wa[1])
            .cmp(&order(wb[1]))
            .then_with(|| wa.get(4).cmp(&wb.get(4)))
            .then_with(|| if wa[1] == "rule" { i.cmp(j) } else { a.cmp(b) })
    });
    lines.into_iter().map(|(_, l)| l).collect()
}

fn assert_same(expected: &str, actual: &str) {
    let (expected, actual) = (normalize(expected), normalize(actual));
    for line in &expected {
        assert!(
            actual.contains(line),
            "missing: {line}\nin:\n{}",
            actual.join("\n")
        );
    }
    for line in &actual {
        assert!(expected.contains(line), "unexpected: {line}");
    }
    assert_eq!(expected, actual);
}

/// `setupNFTables` of kube-proxy 1.31 with upstream's fake proxier configuration.
const BASE_RULES: &str = r#"
add table ip kube-proxy { comment "rules for kube-proxy" ; }

add chain ip kube-proxy filter-prerouting { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy filter-input { type filter hook input priority -110 ; }
add chain ip kube-proxy filter-forward { type filter hook forward priority -110 ; }
add chain ip kube-proxy filter-output { type filter hook output priority -110 ; }
add chain ip kube-proxy filter-output-post-dnat { type filter hook output priority -90 ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy firewall-check
add chain ip kube-proxy mark-for-masquerade
add chain ip kube-proxy masquerading
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add chain ip kube-proxy services
add chain ip kube-proxy service-endpoints-check

add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }

add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }

add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy filter-prerouting ct state new jump firewall-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump firewall-check
add rule ip kube-proxy filter-output-post-dnat ct state new jump cluster-ips-check
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000
add rule ip kube-proxy masquerading mark and 0x4000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x4000
add rule ip kube-proxy masquerading masquerade fully-random
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports

add element ip kube-proxy nodeport-ips { 192.168.0.2 }
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
"#;

#[test]
fn chain_names_follow_the_upstream_hash() {
    let svc1 = name("ns1", "svc1", "p80");
    assert_eq!(
        service_chain_base(&svc1, Protocol::Tcp),
        "ULMVA6XW-ns1/svc1/tcp/p80"
    );
    assert_eq!(
        endpoint_chain_base(&svc1, Protocol::Tcp, &endpoint("10.180.0.1", None)),
        "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    );
    assert_eq!(
        service_chain_base(&name("ns5", "svc5", "p80"), Protocol::Tcp),
        "HVFWP5L3-ns5/svc5/tcp/p80"
    );
    let long = "a".repeat(300);
    let truncated = hash_and_truncate(&long);
    assert_eq!(truncated.len(), 240);
    assert!(truncated.ends_with("..."));
}

/// `TestOverallNFTablesRules`.
#[test]
fn overall_rules_match_upstream() {
    let svc1 = service("ns1", "svc1", "172.30.0.41");
    let mut svc2 = service("ns2", "svc2", "172.30.0.42");
    svc2.external_policy_local = true;
    svc2.node_port = Some(3001);
    svc2.load_balancer_ips = vec!["1.2.3.4".parse().expect("ip")];
    svc2.external_ips = vec!["192.168.99.22".parse().expect("ip")];
    svc2.health_check_node_port = Some(30000);
    let mut svc3 = service("ns3", "svc3", "172.30.0.43");
    svc3.node_port = Some(3003);
    let mut svc4 = service("ns4", "svc4", "172.30.0.44");
    svc4.external_ips = vec!["192.168.99.33".parse().expect("ip")];
    let mut svc5 = service("ns5", "svc5", "172.30.0.45");
    svc5.node_port = Some(3002);
    svc5.load_balancer_ips = vec!["5.6.7.8".parse().expect("ip")];
    svc5.affinity_seconds = Some(10800);
    svc5.source_ranges = vec!["203.0.113.0/25".parse().expect("cidr")];
    let svc6 = service("ns6", "svc6", "172.30.0.46");
    let state = state(vec![
        (svc1, vec![endpoint("10.180.0.1", None)]),
        (svc2, vec![endpoint("10.180.0.2", None)]),
        (svc3, vec![endpoint("10.180.0.3", None)]),
        (
            svc4,
            vec![
                endpoint("10.180.0.4", None),
                endpoint("10.180.0.5", Some("test-node")),
            ],
        ),
        (svc5, vec![endpoint("10.180.0.3", None)]),
        (svc6, Vec::new()),
    ]);
    let expected = format!(
        "{BASE_RULES}{}",
        r#"
# svc1
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }

add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80

add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }

# svc2
add chain ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 ip daddr 172.30.0.42 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-42NFTM6N-ns2/svc2/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 }
add chain ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
add chain ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 ip saddr 10.180.0.2 jump mark-for-masquerade
add rule ip kube-proxy endpoint-SGOXE6O3-ns2/svc2/tcp/p80__10.180.0.2/80 meta l4proto tcp dnat to 10.180.0.2:80

add element ip kube-proxy cluster-ips { 172.30.0.42 }
add element ip kube-proxy service-ips { 172.30.0.42 . tcp . 80 : goto service-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }

add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }

# svc3
add chain ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 ip daddr 172.30.0.43 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-4AT6LBPK-ns3/svc3/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80
add chain ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UEIP74TE-ns3/svc3/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80

add element ip kube-proxy cluster-ips { 172.30.0.43 }
add element ip kube-proxy service-ips { 172.30.0.43 . tcp . 80 : goto service-4AT6LBPK-ns3/svc3/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }

# svc4
add chain ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 ip daddr 172.30.0.44 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }
add chain ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-LAUZTJTB-ns4/svc4/tcp/p80 goto service-LAUZTJTB-ns4/svc4/tcp/p80
add chain ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 ip saddr 10.180.0.5 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 meta l4proto tcp dnat to 10.180.0.5:80
add chain ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 ip saddr 10.180.0.4 jump mark-for-masquerade
add rule ip kube-proxy endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 meta l4proto tcp dnat to 10.180.0.4:80

add element ip kube-proxy cluster-ips { 172.30.0.44 }
add element ip kube-proxy service-ips { 172.30.0.44 . tcp . 80 : goto service-LAUZTJTB-ns4/svc4/tcp/p80 }
add element ip kube-proxy service-ips { 192.168.99.33 . tcp . 80 : goto external-LAUZTJTB-ns4/svc4/tcp/p80 }

# svc5
add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add chain ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip daddr 172.30.0.45 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 }
add chain ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-HVFWP5L3-ns5/svc5/tcp/p80 goto service-HVFWP5L3-ns5/svc5/tcp/p80
add chain ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80
add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop

add chain ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 ip saddr 10.180.0.3 jump mark-for-masquerade
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 meta l4proto tcp dnat to 10.180.0.3:80

add element ip kube-proxy cluster-ips { 172.30.0.45 }
add element ip kube-proxy service-ips { 172.30.0.45 . tcp . 80 : goto service-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-ips { 5.6.7.8 . tcp . 80 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3002 : goto external-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 comment "ns5/svc5:p80" : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }

# svc6
add element ip kube-proxy cluster-ips { 172.30.0.46 }
add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
"#
    );
    assert_same(&expected, &dump(&plan(&state, &config())));
}

fn web(endpoints: &[&str]) -> (ServicePort, Vec<Endpoint>) {
    let mut web = service("default", "web", "10.96.0.20");
    web.node_port = Some(30080);
    (
        web,
        endpoints
            .iter()
            .map(|ip| endpoint(ip, Some("node1")))
            .collect(),
    )
}

fn two_services(endpoints: &[&str]) -> State {
    state(vec![
        web(endpoints),
        (
            service("default", "other", "10.96.0.21"),
            vec![endpoint("10.244.2.9", Some("node2"))],
        ),
    ])
}

/// Runs a sync without the kernel: its transaction, then remembers it as applied.
fn sync(proxier: &mut Proxier, state: &State) -> Transaction {
    let transaction = proxier.transaction(state);
    proxier.commit(transaction.clone());
    transaction
}

#[test]
fn the_first_sync_rebuilds_the_table_and_an_unchanged_state_needs_no_transaction() {
    let mut proxier = Proxier::new(config());
    let first = sync(&mut proxier, &two_services(&["10.244.1.2"]));
    assert_eq!(first.kind, SyncKind::Full);
    assert!(first
        .text
        .starts_with("add table ip kube-proxy\ndelete table ip kube-proxy\nadd table ip kube-proxy { comment \"rules for kube-proxy\" ; }\n"));
    let again = sync(&mut proxier, &two_services(&["10.244.1.2"]));
    assert_eq!(again.kind, SyncKind::Partial);
    assert_eq!(again.text, "");
    proxier.force_full();
    assert_eq!(
        sync(&mut proxier, &two_services(&["10.244.1.2"])).kind,
        SyncKind::Full
    );
}

#[test]
fn an_endpoint_change_rewrites_only_that_service() {
    let mut proxier = Proxier::new(config());
    let full = sync(&mut proxier, &two_services(&["10.244.1.2", "10.244.1.3"]));
    let added = sync(
        &mut proxier,
        &two_services(&["10.244.1.2", "10.244.1.3", "10.244.1.4"]),
    );
    assert_eq!(added.kind, SyncKind::Partial);
    let base = service_chain_base(&name("default", "web", "p80"), Protocol::Tcp);
    let svc = format!("service-{base}");
    let ep = |ip: &str| {
        format!(
            "endpoint-{}",
            endpoint_chain_base(
                &name("default", "web", "p80"),
                Protocol::Tcp,
                &endpoint(ip, Some("node1"))
            )
        )
    };
    let expected = format!(
        "add chain ip kube-proxy {e2}
flush chain ip kube-proxy {e2}
add chain ip kube-proxy {e3}
flush chain ip kube-proxy {e3}
add chain ip kube-proxy {e4}
add chain ip kube-proxy {svc}
flush chain ip kube-proxy {svc}
add chain ip kube-proxy external-{base}
flush chain ip kube-proxy external-{base}
add rule ip kube-proxy {e2} ip saddr 10.244.1.2 jump mark-for-masquerade
add rule ip kube-proxy {e2} meta l4proto tcp dnat to 10.244.1.2:80
add rule ip kube-proxy {e3} ip saddr 10.244.1.3 jump mark-for-masquerade
add rule ip kube-proxy {e3} meta l4proto tcp dnat to 10.244.1.3:80
add rule ip kube-proxy {e4} ip saddr 10.244.1.4 jump mark-for-masquerade
add rule ip kube-proxy {e4} meta l4proto tcp dnat to 10.244.1.4:80
add rule ip kube-proxy {svc} ip daddr 10.96.0.20 tcp dport 80 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy {svc} numgen random mod 3 vmap {{ 0 : goto {e2} , 1 : goto {e3} , 2 : goto {e4} }}
add rule ip kube-proxy external-{base} jump mark-for-masquerade
add rule ip kube-proxy external-{base} goto {svc}
",
        e2 = ep("10.244.1.2"),
        e3 = ep("10.244.1.3"),
        e4 = ep("10.244.1.4"),
    );
    assert_eq!(added.text, expected);
    assert_eq!(added.lines(), 19);
    assert!(added.lines() * 3 < full.lines(), "{}", full.lines());

    let removed = sync(&mut proxier, &two_services(&["10.244.1.2", "10.244.1.3"]));
    assert!(removed
        .text
        .contains(&format!("flush chain ip kube-proxy {}\n", ep("10.244.1.4"))));
    assert!(!removed.text.contains("delete chain"));
    assert!(!removed.text.contains("other"));
    let later = sync(&mut proxier, &two_services(&["10.244.1.2", "10.244.1.3"]));
    assert_eq!(
        later.text,
        format!("delete chain ip kube-proxy {}\n", ep("10.244.1.4"))
    );
    assert_eq!(
        sync(&mut proxier, &two_services(&["10.244.1.2", "10.244.1.3"])).text,
        ""
    );
}

#[test]
fn losing_the_last_endpoint_swaps_the_map_elements() {
    let mut proxier = Proxier::new(config());
    sync(&mut proxier, &two_services(&["10.244.1.2"]));
    let none = sync(&mut proxier, &two_services(&[]));
    let base = service_chain_base(&name("default", "web", "p80"), Protocol::Tcp);
    for line in [
        "delete element ip kube-proxy service-ips { 10.96.0.20 . tcp . 80 }".to_owned(),
        "delete element ip kube-proxy service-nodeports { tcp . 30080 }".to_owned(),
        format!("flush chain ip kube-proxy service-{base}"),
        format!("flush chain ip kube-proxy external-{base}"),
        "add element ip kube-proxy no-endpoint-services { 10.96.0.20 . tcp . 80 comment \"default/web:p80\" : goto reject-chain }".to_owned(),
        "add element ip kube-proxy no-endpoint-nodeports { tcp . 30080 comment \"default/web:p80\" : goto reject-chain }".to_owned(),
    ] {
        assert!(none.text.lines().any(|l| l == line), "{line} not in:\n{}", none.text);
    }
    assert!(!none.text.contains("cluster-ips"), "{}", none.text);
}

#[test]
fn affinity_sets_come_and_go_with_client_ip_affinity() {
    let mut proxier = Proxier::new(config());
    let plain = two_services(&["10.244.1.2"]);
    sync(&mut proxier, &plain);
    let mut sticky = plain.clone();
    for (port, _) in sticky.values_mut() {
        if port.name.name == "web" {
            port.affinity_seconds = Some(10800);
        }
    }
    let set = format!(
        "affinity-{}",
        endpoint_chain_base(
            &name("default", "web", "p80"),
            Protocol::Tcp,
            &endpoint("10.244.1.2", Some("node1"))
        )
    );
    let on = sync(&mut proxier, &sticky);
    assert!(on.text.contains(&format!(
        "add set ip kube-proxy {set} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }}\n"
    )));
    assert!(on.text.contains(&format!("update @{set} {{ ip saddr }}")));
    let off = sync(&mut proxier, &plain);
    assert!(off
        .text
        .contains(&format!("delete set ip kube-proxy {set}\n")));
    assert!(!off.text.contains("update @"));
}

/// The transactions load into a real nftables, in a network namespace of their own
/// that dies with the command.
#[test]
fn transactions_load_into_nft() {
    let mut proxier = Proxier::new(config());
    let mut script = String::new();
    let states = [
        two_services(&["10.244.1.2"]),
        two_services(&["10.244.1.2", "10.244.1.3"]),
        two_services(&[]),
        two_services(&["10.244.1.3"]),
        state(Vec::new()),
        two_services(&["10.244.1.3"]),
    ];
    for (i, state) in states.iter().enumerate() {
        let mut state = state.clone();
        if i == 3 {
            for (port, _) in state.values_mut() {
                port.affinity_seconds = Some(60);
            }
        }
        let transaction = sync(&mut proxier, &state);
        script.push_str(&format!(
            "nft -f - <<'EOF'\n{}EOF\n[ $? = 0 ] || exit 1\n",
            transaction.text
        ));
    }
    script.push_str("nft list table ip kube-proxy\n");
    let output = std::process::Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{script}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        listed.contains("10.96.0.20 . tcp . 80 : goto service-"),
        "{listed}"
    );
}
