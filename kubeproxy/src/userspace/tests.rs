use std::net::Ipv4Addr;

use super::*;
use crate::model::{Endpoint, Protocol, ServicePort, ServicePortName};

fn service(port: &str, protocol: Protocol, ip: &str, number: u16) -> ServicePort {
    ServicePort {
        name: ServicePortName {
            namespace: "default".into(),
            name: "web".into(),
            port: port.into(),
        },
        protocol,
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

const HOST: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 2);

fn rules_of(rules: &Rules, chain: &str) -> Vec<String> {
    rules
        .nat
        .get(chain)
        .or_else(|| rules.filter.get(chain))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_cluster_ip_is_redirected_from_pods_and_dnated_from_the_node() {
    let svc = service("http", Protocol::Tcp, "10.96.0.20", 80);
    let rules = plan(
        &[Portal {
            service: &svc,
            proxy_port: 40123,
        }],
        HOST,
    );
    assert_eq!(
        rules_of(&rules, KUBE_PORTALS_CONTAINER),
        ["-A KUBE-PORTALS-CONTAINER -d 10.96.0.20/32 -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 80 -j REDIRECT --to-ports 40123"]
    );
    assert_eq!(
        rules_of(&rules, KUBE_PORTALS_HOST),
        ["-A KUBE-PORTALS-HOST -d 10.96.0.20/32 -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 80 -j DNAT --to-destination 192.168.0.2:40123"]
    );
    for chain in [
        KUBE_NODEPORT_CONTAINER,
        KUBE_NODEPORT_HOST,
        KUBE_NODEPORT_NON_LOCAL,
    ] {
        assert!(rules_of(&rules, chain).is_empty(), "{chain}");
    }
}

#[test]
fn a_node_port_is_redirected_from_any_local_address_and_accepted() {
    let mut svc = service("", Protocol::Udp, "10.96.0.53", 53);
    svc.node_port = Some(30053);
    let rules = plan(
        &[Portal {
            service: &svc,
            proxy_port: 40000,
        }],
        HOST,
    );
    assert_eq!(
        rules_of(&rules, KUBE_NODEPORT_CONTAINER),
        ["-A KUBE-NODEPORT-CONTAINER -p udp -m comment --comment \"default/web\" -m udp --dport 30053 -j REDIRECT --to-ports 40000"]
    );
    assert_eq!(
        rules_of(&rules, KUBE_NODEPORT_HOST),
        ["-A KUBE-NODEPORT-HOST -p udp -m comment --comment \"default/web\" -m udp --dport 30053 -j DNAT --to-destination 192.168.0.2:40000"]
    );
    assert_eq!(
        rules_of(&rules, KUBE_NODEPORT_NON_LOCAL),
        ["-A KUBE-NODEPORT-NON-LOCAL -p udp -m comment --comment \"default/web\" -m udp --dport 40000 -m state --state NEW -j ACCEPT"]
    );
}

#[test]
fn external_and_load_balancer_ips_are_portals_too() {
    let mut svc = service("http", Protocol::Tcp, "10.96.0.20", 80);
    svc.external_ips = vec![Ipv4Addr::new(203, 0, 113, 7)];
    svc.load_balancer_ips = vec![Ipv4Addr::new(198, 51, 100, 9)];
    let rules = plan(
        &[Portal {
            service: &svc,
            proxy_port: 40123,
        }],
        HOST,
    );
    let m = |ip: &str| {
        format!("-d {ip}/32 -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 80")
    };
    assert_eq!(
        rules_of(&rules, KUBE_PORTALS_CONTAINER),
        [
            format!("-A KUBE-PORTALS-CONTAINER {} -j REDIRECT --to-ports 40123", m("10.96.0.20")),
            format!("-A KUBE-PORTALS-CONTAINER {} -j REDIRECT --to-ports 40123", m("198.51.100.9")),
            format!("-A KUBE-PORTALS-CONTAINER {} -m physdev ! --physdev-is-in -j REDIRECT --to-ports 40123", m("203.0.113.7")),
            format!("-A KUBE-PORTALS-CONTAINER {} -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 40123", m("203.0.113.7")),
        ]
    );
    assert_eq!(
        rules_of(&rules, KUBE_PORTALS_HOST),
        [
            format!("-A KUBE-PORTALS-HOST {} -j DNAT --to-destination 192.168.0.2:40123", m("10.96.0.20")),
            format!("-A KUBE-PORTALS-HOST {} -j DNAT --to-destination 192.168.0.2:40123", m("198.51.100.9")),
            format!("-A KUBE-PORTALS-HOST {} -m addrtype --dst-type LOCAL -j DNAT --to-destination 192.168.0.2:40123", m("203.0.113.7")),
        ]
    );
}

#[test]
fn render_rewrites_every_userspace_chain() {
    let svc = service("http", Protocol::Tcp, "10.96.0.20", 80);
    let text = render(&plan(
        &[Portal {
            service: &svc,
            proxy_port: 40123,
        }],
        HOST,
    ));
    assert_eq!(
        text,
        "*nat
:KUBE-PORTALS-CONTAINER - [0:0]
:KUBE-PORTALS-HOST - [0:0]
:KUBE-NODEPORT-CONTAINER - [0:0]
:KUBE-NODEPORT-HOST - [0:0]
-A KUBE-PORTALS-CONTAINER -d 10.96.0.20/32 -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 80 -j REDIRECT --to-ports 40123
-A KUBE-PORTALS-HOST -d 10.96.0.20/32 -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 80 -j DNAT --to-destination 192.168.0.2:40123
COMMIT
*filter
:KUBE-NODEPORT-NON-LOCAL - [0:0]
COMMIT
"
    );
    assert_eq!(
        render(&plan(&[], HOST)),
        "*nat
:KUBE-PORTALS-CONTAINER - [0:0]
:KUBE-PORTALS-HOST - [0:0]
:KUBE-NODEPORT-CONTAINER - [0:0]
:KUBE-NODEPORT-HOST - [0:0]
COMMIT
*filter
:KUBE-NODEPORT-NON-LOCAL - [0:0]
COMMIT
",
        "no services: the chains are emptied"
    );
}

#[test]
fn jumps_put_portals_first_and_node_ports_last() {
    let jumps: Vec<String> = jumps()
        .into_iter()
        .map(|(j, position)| {
            format!(
                "{position:?} -t {} {} {} -j {}",
                j.table,
                j.from,
                j.args.join(" "),
                j.to
            )
        })
        .collect();
    assert_eq!(
        jumps,
        [
            "Prepend -t nat PREROUTING -m comment --comment handle ClusterIPs; NOTE: this must be before the NodePort rules -j KUBE-PORTALS-CONTAINER",
            "Prepend -t nat OUTPUT -m comment --comment handle ClusterIPs; NOTE: this must be before the NodePort rules -j KUBE-PORTALS-HOST",
            "Append -t nat PREROUTING -m addrtype --dst-type LOCAL -m comment --comment handle service NodePorts; NOTE: this must be the last rule in the chain -j KUBE-NODEPORT-CONTAINER",
            "Append -t nat OUTPUT -m addrtype --dst-type LOCAL -m comment --comment handle service NodePorts; NOTE: this must be the last rule in the chain -j KUBE-NODEPORT-HOST",
            "Prepend -t filter INPUT -m comment --comment Ensure that non-local NodePort traffic can flow -j KUBE-NODEPORT-NON-LOCAL",
        ]
    );
}

#[test]
fn backends_are_the_usable_endpoints_whatever_the_traffic_policy() {
    let mut svc = service("http", Protocol::Tcp, "10.96.0.20", 80);
    svc.internal_policy_local = true;
    let endpoint = |ip: &str, ready: bool, node: &str| Endpoint {
        ip: ip.parse().expect("ip"),
        port: 8080,
        ready,
        serving: ready,
        terminating: false,
        node: Some(node.into()),
    };
    let endpoints = [
        endpoint("10.244.1.5", true, "node2"),
        endpoint("10.244.0.5", true, "node1"),
        endpoint("10.244.0.6", false, "node1"),
    ];
    assert_eq!(
        backends(&svc, &endpoints, "node1"),
        [
            "10.244.1.5:8080".parse::<SocketAddrV4>().expect("addr"),
            "10.244.0.5:8080".parse().expect("addr"),
        ]
    );
}
