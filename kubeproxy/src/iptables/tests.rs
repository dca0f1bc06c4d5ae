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

fn service(ns: &str, svc: &str, port: &str, ip: &str, number: u16) -> ServicePort {
    ServicePort {
        name: name(ns, svc, port),
        protocol: Protocol::Tcp,
        cluster_ip: ip.parse().expect("ip"),
        port: number,
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

fn endpoint(ip: &str, port: u16, node: &str) -> Endpoint {
    Endpoint {
        ip: ip.parse::<Ipv4Addr>().expect("ip"),
        port,
        ready: true,
        serving: true,
        terminating: false,
        node: Some(node.into()),
    }
}

fn config() -> Config {
    Config {
        node: "node1".into(),
        cluster_cidr: Some("10.0.0.0/8".into()),
        masquerade_all: false,
        node_ip: None,
    }
}

fn state(entries: Vec<(ServicePort, Vec<Endpoint>)>) -> State {
    entries
        .into_iter()
        .map(|(p, e)| (p.name.clone(), (p, e)))
        .collect()
}

#[test]
fn chain_names_follow_the_upstream_hash() {
    let svc1 = name("ns1", "svc1", "p80");
    assert_eq!(
        service_chain("KUBE-SVC-", &svc1, Protocol::Tcp),
        "KUBE-SVC-XPGD46QRK7WJZT7O"
    );
    assert_eq!(
        service_chain("KUBE-EXT-", &svc1, Protocol::Tcp),
        "KUBE-EXT-XPGD46QRK7WJZT7O"
    );
    assert_eq!(
        service_chain("KUBE-SVC-", &name("ns3", "svc3", "p80"), Protocol::Tcp),
        "KUBE-SVC-X27LE4BHSL4DOUIK"
    );
    assert_eq!(
        service_chain("KUBE-SVC-", &name("ns5", "svc5", "p80"), Protocol::Tcp),
        "KUBE-SVC-NUKIZ6OKUXPJNT4C"
    );
    let sep = |ip| endpoint_chain(&svc1, Protocol::Tcp, &endpoint(ip, 80, "n"));
    assert_eq!(sep("10.180.0.1"), "KUBE-SEP-SXIVWICOYRO3J4NJ");
    assert_eq!(sep("10.180.0.2"), "KUBE-SEP-LXVODXWDISEETFEF");
    assert_eq!(sep("10.180.2.1"), "KUBE-SEP-ZX7GRIZKSNUQ3LAJ");
}

#[test]
fn probabilities_have_ten_decimals() {
    assert_eq!(probability(2), "0.5000000000");
    assert_eq!(probability(3), "0.3333333333");
    assert_eq!(probability(1), "1.0000000000");
}

/// The NodePort service with two endpoints of upstream's rule examples, line by line.
#[test]
fn a_node_port_service_renders_as_upstream() {
    let mut svc = service("ns1", "svc1", "p80", "172.30.0.41", 80);
    svc.node_port = Some(3001);
    let rules = plan(
        &state(vec![(
            svc,
            vec![
                endpoint("10.180.0.1", 80, "node1"),
                endpoint("10.180.0.2", 80, "node2"),
            ],
        )]),
        &config(),
    );
    let text = render(&rules, &Selection::full(&rules, &BTreeSet::new()));
    let expected = r#"*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-EXT-XPGD46QRK7WJZT7O - [0:0]
:KUBE-SEP-LXVODXWDISEETFEF - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -m comment --comment ns1/svc1:p80 -m tcp -p tcp --dport 3001 -j KUBE-EXT-XPGD46QRK7WJZT7O
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment "masquerade traffic for ns1/svc1:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-XPGD46QRK7WJZT7O -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ
-A KUBE-SEP-LXVODXWDISEETFEF -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:80
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -m statistic --mode random --probability 0.5000000000 -j KUBE-SEP-SXIVWICOYRO3J4NJ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.2:80" -j KUBE-SEP-LXVODXWDISEETFEF
COMMIT
"#;
    assert_eq!(text, expected);
}

#[test]
fn a_service_without_endpoints_is_rejected_in_filter() {
    let mut svc = service("ns2", "svc2", "p80", "172.30.0.42", 80);
    svc.node_port = Some(3002);
    svc.external_ips = vec!["192.168.99.11".parse().expect("ip")];
    let rules = plan(&state(vec![(svc, Vec::new())]), &config());
    assert!(rules.services.is_empty());
    assert_eq!(
        rules.filter[KUBE_SERVICES],
        ["-A KUBE-SERVICES -m comment --comment \"ns2/svc2:p80 has no endpoints\" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j REJECT"]
    );
    assert_eq!(
        rules.filter[KUBE_EXTERNAL_SERVICES],
        [
            "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns2/svc2:p80 has no endpoints\" -m tcp -p tcp -d 192.168.99.11 --dport 80 -j REJECT",
            "-A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns2/svc2:p80 has no endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3002 -j REJECT",
        ]
    );
}

#[test]
fn client_ip_affinity_uses_recent_lists() {
    let mut svc = service("ns1", "svc1", "p80", "172.30.0.41", 80);
    svc.affinity_seconds = Some(10800);
    let rules = plan(
        &state(vec![(svc, vec![endpoint("10.180.0.1", 80, "node1")])]),
        &config(),
    );
    let svc_chain = &rules.services["KUBE-SVC-XPGD46QRK7WJZT7O"];
    assert_eq!(
        svc_chain[1],
        "-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -m recent --name KUBE-SEP-SXIVWICOYRO3J4NJ --rcheck --seconds 10800 --reap -j KUBE-SEP-SXIVWICOYRO3J4NJ"
    );
    assert_eq!(
        rules.services["KUBE-SEP-SXIVWICOYRO3J4NJ"][1],
        "-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m recent --name KUBE-SEP-SXIVWICOYRO3J4NJ --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80"
    );
}

#[test]
fn external_traffic_policy_local_keeps_pod_and_local_traffic_on_the_cluster_chain() {
    let mut svc = service("ns1", "svc1", "p80", "172.30.0.41", 80);
    svc.node_port = Some(3001);
    svc.external_policy_local = true;
    let eps = vec![
        endpoint("10.180.0.1", 80, "node2"),
        endpoint("10.180.2.1", 80, "node1"),
    ];
    let rules = plan(&state(vec![(svc.clone(), eps)]), &config());
    assert_eq!(
        rules.services["KUBE-EXT-XPGD46QRK7WJZT7O"],
        [
            "-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment \"pod traffic for ns1/svc1:p80 external destinations\" -s 10.0.0.0/8 -j KUBE-SVC-XPGD46QRK7WJZT7O",
            "-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment \"masquerade LOCAL traffic for ns1/svc1:p80 external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ",
            "-A KUBE-EXT-XPGD46QRK7WJZT7O -m comment --comment \"route LOCAL traffic for ns1/svc1:p80 external destinations\" -m addrtype --src-type LOCAL -j KUBE-SVC-XPGD46QRK7WJZT7O",
            "-A KUBE-EXT-XPGD46QRK7WJZT7O -j KUBE-SVL-XPGD46QRK7WJZT7O",
        ]
    );
    assert_eq!(
        rules.services["KUBE-SVL-XPGD46QRK7WJZT7O"],
        ["-A KUBE-SVL-XPGD46QRK7WJZT7O -m comment --comment \"ns1/svc1:p80 -> 10.180.2.1:80\" -j KUBE-SEP-ZX7GRIZKSNUQ3LAJ"]
    );
    // Without a local endpoint, outside traffic is dropped, pods still get through.
    let remote_only = plan(
        &state(vec![(svc, vec![endpoint("10.180.0.1", 80, "node2")])]),
        &config(),
    );
    assert!(remote_only.filter[KUBE_EXTERNAL_SERVICES].iter().any(|r| r.contains("has no local endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3001 -j DROP")));
    assert!(!remote_only
        .services
        .contains_key("KUBE-SVL-XPGD46QRK7WJZT7O"));
    assert_eq!(remote_only.services["KUBE-EXT-XPGD46QRK7WJZT7O"].len(), 3);
}

#[test]
fn terminating_endpoints_serve_only_when_none_is_ready() {
    let svc = service("ns1", "svc1", "p80", "172.30.0.41", 80);
    let mut old = endpoint("10.180.0.1", 80, "node1");
    old.ready = false;
    old.terminating = true;
    let rules = plan(&state(vec![(svc.clone(), vec![old.clone()])]), &config());
    assert!(rules.services.contains_key("KUBE-SEP-SXIVWICOYRO3J4NJ"));
    let both = plan(
        &state(vec![(svc, vec![old, endpoint("10.180.0.2", 80, "node1")])]),
        &config(),
    );
    assert!(!both.services.contains_key("KUBE-SEP-SXIVWICOYRO3J4NJ"));
    assert!(both.services.contains_key("KUBE-SEP-LXVODXWDISEETFEF"));
}

#[test]
fn partial_syncs_write_only_changed_chains_and_delete_stale_ones() {
    let one = state(vec![
        (
            service("ns1", "svc1", "p80", "172.30.0.41", 80),
            vec![endpoint("10.180.0.1", 80, "node1")],
        ),
        (
            service("ns3", "svc3", "p80", "172.30.0.43", 80),
            vec![endpoint("10.180.0.3", 80, "node1")],
        ),
    ]);
    let first = plan(&one, &config());
    let mut two = one.clone();
    if let Some(entry) = two.get_mut(&name("ns1", "svc1", "p80")) {
        entry.1 = vec![endpoint("10.180.0.2", 80, "node1")];
    }
    let second = plan(&two, &config());
    let selection = Selection::partial(&second, &first.services);
    assert_eq!(
        selection.write,
        [
            "KUBE-SEP-LXVODXWDISEETFEF".to_owned(),
            "KUBE-SVC-XPGD46QRK7WJZT7O".to_owned()
        ]
        .into()
    );
    assert_eq!(
        selection.delete,
        ["KUBE-SEP-SXIVWICOYRO3J4NJ".to_owned()].into()
    );
    let text = render(&second, &selection);
    assert!(text.contains(":KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]\n"));
    assert!(text.ends_with("-X KUBE-SEP-SXIVWICOYRO3J4NJ\nCOMMIT\n"));
    assert!(
        !text.contains(":KUBE-SVC-X27LE4BHSL4DOUIK"),
        "unchanged chains are left alone"
    );
    assert!(
        text.contains("-j KUBE-SVC-X27LE4BHSL4DOUIK"),
        "but still jumped to"
    );
}

#[test]
fn stale_chains_found_in_the_kernel_are_deleted_by_a_full_sync() {
    let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-AAAAAAAAAAAAAAAA - [0:0]\n:KUBE-SEP-BBBBBBBBBBBBBBBB - [0:0]\nCOMMIT\n";
    let existing = service_chains_in(save);
    assert_eq!(existing.len(), 2);
    let rules = plan(&State::new(), &config());
    let selection = Selection::full(&rules, &existing);
    assert_eq!(selection.delete, existing);
}

#[test]
fn internal_traffic_policy_local_drops_without_a_local_endpoint() {
    let mut svc = service("ns1", "svc1", "p80", "172.30.0.41", 80);
    svc.internal_policy_local = true;
    let rules = plan(
        &state(vec![(
            svc.clone(),
            vec![endpoint("10.180.0.1", 80, "node2")],
        )]),
        &config(),
    );
    assert_eq!(
        rules.filter[KUBE_SERVICES],
        ["-A KUBE-SERVICES -m comment --comment \"ns1/svc1:p80 has no local endpoints\" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j DROP"]
    );
    assert!(rules.services.is_empty());
    let local = plan(
        &state(vec![(svc, vec![endpoint("10.180.2.1", 80, "node1")])]),
        &config(),
    );
    assert!(local.nat[KUBE_SERVICES][0].ends_with("-j KUBE-SVL-XPGD46QRK7WJZT7O"));
}

/// svc5 of upstream's `TestOverallIPTablesRules`: a load-balancer IP with a source
/// range goes through its KUBE-FW chain, and what the chain lets through nothing else
/// catches is dropped in KUBE-PROXY-FIREWALL.
#[test]
fn load_balancer_source_ranges_go_through_a_firewall_chain() {
    let mut svc = service("ns5", "svc5", "p80", "172.30.0.45", 80);
    svc.node_port = Some(3002);
    svc.load_balancer_ips = vec!["5.6.7.8".parse().expect("ip")];
    svc.source_ranges = vec!["203.0.113.0/25".parse().expect("cidr")];
    let rules = plan(
        &state(vec![(
            svc.clone(),
            vec![endpoint("10.180.0.3", 80, "node2")],
        )]),
        &config(),
    );
    assert!(rules.nat[KUBE_SERVICES].contains(&"-A KUBE-SERVICES -m comment --comment \"ns5/svc5:p80 loadbalancer IP\" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j KUBE-FW-NUKIZ6OKUXPJNT4C".to_owned()));
    assert_eq!(
        rules.services["KUBE-FW-NUKIZ6OKUXPJNT4C"],
        [
            "-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment \"ns5/svc5:p80 loadbalancer IP\" -s 203.0.113.0/25 -j KUBE-EXT-NUKIZ6OKUXPJNT4C",
            "-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment \"other traffic to ns5/svc5:p80 will be dropped by KUBE-PROXY-FIREWALL\"",
        ]
    );
    assert_eq!(
        rules.filter[KUBE_PROXY_FIREWALL],
        ["-A KUBE-PROXY-FIREWALL -m comment --comment \"ns5/svc5:p80 traffic not accepted by KUBE-FW-NUKIZ6OKUXPJNT4C\" -m tcp -p tcp -d 5.6.7.8 --dport 80 -j DROP"]
    );
    // A range holding the node's own IP also admits the node's traffic, which leaves
    // with the load-balancer IP as its source.
    let mut on_node = config();
    on_node.node_ip = Some("203.0.113.9".parse().expect("ip"));
    let rules = plan(
        &state(vec![(svc, vec![endpoint("10.180.0.3", 80, "node2")])]),
        &on_node,
    );
    assert_eq!(
        rules.services["KUBE-FW-NUKIZ6OKUXPJNT4C"][1],
        "-A KUBE-FW-NUKIZ6OKUXPJNT4C -m comment --comment \"ns5/svc5:p80 loadbalancer IP\" -s 5.6.7.8 -j KUBE-EXT-NUKIZ6OKUXPJNT4C"
    );
}
