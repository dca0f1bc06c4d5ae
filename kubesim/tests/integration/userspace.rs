//! Services through `kubesim proxy --proxy-mode userspace` on every node: the proxy
//! listens on a port of its own per service port and iptables redirects the service's
//! traffic there. Round robin over every backend, node ports from the external host,
//! ClientIP affinity, backends seeing the node instead of the client, and a refusing
//! or silent endpoint skipped by retrying the next one.

use std::collections::{BTreeMap, BTreeSet};

use crate::harness::eventually;
use crate::netcluster::NetCluster;
use crate::services::{deploy, Deployed};

/// The answers to `count` requests to `url` from the client pod, one a line.
fn answers(cluster: &NetCluster, url: &str, count: usize) -> Vec<String> {
    let script = format!("for i in $(seq {count}); do curl -s -m 3 {url}; echo; done");
    cluster
        .ok(&["exec", "client", "--", "sh", "-c", &script])
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn tally(answers: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts.entry(a.clone()).or_default() += 1;
    }
    counts
}

/// A selector-less Service whose Endpoints list the backends, one of them also on a
/// port nothing listens on (it refuses), and an address nobody has (it never answers).
fn flaky(backends: &[String], refusing: &str, silent: &str) -> String {
    let live: Vec<String> = backends.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: flaky}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Endpoints
metadata: {{name: flaky}}
subsets:
- addresses: [{}]
  ports: [{{name: http, port: 8080}}]
- addresses: [{{ip: {refusing}}}, {{ip: {silent}}}]
  ports: [{{name: http, port: 9}}]
"#,
        live.join(", ")
    )
}

#[test]
fn services_forward_in_userspace_mode() {
    let cluster = NetCluster::start_with_proxy(2, &["--proxy-mode", "userspace"]);
    let Deployed {
        ip,
        pods,
        client_ip,
        ..
    } = deploy(&cluster);

    // Once the proxy has the three endpoints, round robin gives each its turn.
    let url = format!("http://{ip}/hostname");
    let spread = eventually(30, || {
        let seen: BTreeSet<String> = answers(&cluster, &url, 30).into_iter().collect();
        (seen == pods).then_some(())
    });
    assert!(
        spread.is_some(),
        "requests to {url} did not reach all of {pods:?}:\n{}",
        cluster.logs()
    );
    let turns = tally(&answers(&cluster, &url, 30));
    assert_eq!(
        turns.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "round robin: {turns:?}"
    );

    let seen = cluster.ok(&[
        "exec",
        "client",
        "--",
        "curl",
        "-s",
        &format!("http://{ip}/clientip"),
    ]);
    let (source, _) = seen.rsplit_once(':').expect("ip:port");
    assert_ne!(source, client_ip, "the backend sees the proxy, not the pod");

    for node in 1..=2 {
        let node_ip = cluster.node_ip(node);
        let out = cluster.in_netns(
            cluster.topology().external_netns(),
            &[
                "curl",
                "-s",
                "-m",
                "3",
                &format!("http://{node_ip}:30080/hostname"),
            ],
        );
        let answer = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            pods.contains(&answer),
            "NodePort on {node_ip} answered {answer:?}:\n{}",
            cluster.logs()
        );
        let mode = cluster.in_netns(
            &cluster.node_name(node),
            &["curl", "-s", "http://127.0.0.1:10249/proxyMode"],
        );
        assert_eq!(String::from_utf8_lossy(&mode.stdout), "userspace");
    }

    // UDP: each of agnhost's dial tries is a new client "connection".
    let first_ip = cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    let dial = format!(
        "http://{first_ip}:8080/dial?request=hostname&protocol=udp&host={ip}&port=90&tries=6"
    );
    let udp = eventually(20, || {
        let out = cluster.ok(&["exec", "client", "--", "curl", "-s", "-m", "10", &dial]);
        pods.iter().all(|p| out.contains(p)).then_some(())
    });
    assert!(
        udp.is_some(),
        "UDP through {ip}:90 did not reach every backend:\n{}",
        cluster.logs()
    );

    cluster.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"sessionAffinity":"ClientIP"}}"#,
    ]);
    let sticky = eventually(20, || {
        (tally(&answers(&cluster, &url, 15)).len() == 1).then_some(())
    });
    assert!(
        sticky.is_some(),
        "ClientIP affinity did not pin one backend"
    );
    cluster.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"sessionAffinity":"None"}}"#,
    ]);
    let spread_again = eventually(20, || {
        (tally(&answers(&cluster, &url, 30)).len() == 3).then_some(())
    });
    assert!(
        spread_again.is_some(),
        "switching affinity off did not spread again"
    );

    // Every request succeeds although two of the five endpoints never serve.
    let backends: Vec<String> = cluster
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let cidr = cluster.ok(&[
        "get",
        "node",
        &cluster.node_name(1),
        "-o",
        "jsonpath={.spec.podCIDR}",
    ]);
    let (network, _) = cidr.rsplit_once('.').expect("an IPv4 CIDR");
    let silent = format!("{network}.250");
    let manifest = flaky(&backends, &backends[0], &silent);
    cluster.ok(&["apply", "-f", &cluster.file("flaky.yaml", &manifest)]);
    let flaky_ip = cluster.ok(&["get", "svc", "flaky", "-o", "jsonpath={.spec.clusterIP}"]);
    let flaky_url = format!("http://{flaky_ip}/hostname");
    let ready = eventually(30, || {
        let seen: BTreeSet<String> = answers(&cluster, &flaky_url, 10).into_iter().collect();
        (seen == pods).then_some(())
    });
    assert!(
        ready.is_some(),
        "{flaky_url} never reached every backend:\n{}",
        cluster.logs()
    );
    let all = answers(&cluster, &flaky_url, 25);
    assert_eq!(all.len(), 25, "some requests failed: {all:?}");
    assert!(all.iter().all(|a| pods.contains(a)), "{all:?}");

    let rules = cluster.in_netns(&cluster.node_name(1), &["iptables-save", "-t", "nat"]);
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(
        rules.contains(&format!(
            "-A KUBE-PORTALS-CONTAINER -d {ip}/32 -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 80 -j REDIRECT --to-ports "
        )),
        "{rules}"
    );
    assert!(
        rules.contains("-A KUBE-NODEPORT-CONTAINER -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 30080 -j REDIRECT --to-ports "),
        "{rules}"
    );
    assert!(
        rules.contains("-j KUBE-PORTALS-CONTAINER") && !rules.contains("KUBE-SVC-"),
        "{rules}"
    );

    // `--cleanup` removes the userspace chains and the jumps into them.
    let node2 = cluster.node_name(2);
    let cleanup = std::process::Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args(["proxy", "--netns", &node2, "--cleanup"])
        .output()
        .expect("run kubesim proxy --cleanup");
    assert!(
        cleanup.status.success(),
        "{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    let left = cluster.in_netns(&node2, &["iptables-save"]);
    let left = String::from_utf8_lossy(&left.stdout).into_owned();
    assert!(
        !left.contains("KUBE-PORTALS") && !left.contains("KUBE-NODEPORT"),
        "{left}"
    );
}
