//! LoadBalancer Services on a real cluster: the controller assigns addresses from the
//! pool, one node's speaker announces each on the underlay, and curl from the external
//! host reaches the backends through kube-proxy; requested addresses, other classes,
//! release on a type change, `loadBalancerSourceRanges`, the health check node port of
//! `externalTrafficPolicy: Local`, and failover when the announcing node goes away.

use std::time::Instant;

use crate::harness::eventually;
use crate::netcluster::NetCluster;

/// Two agnhost netexec backends pinned to `{node}`, behind the LoadBalancer `web`;
/// `pinned` asks for 192.168.1.240; `other` belongs to another controller's class.
fn app(node: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      nodeName: {node}
      containers:
      - name: agnhost
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: ["netexec", "--http-port=8080"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /healthz, port: http}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    )
}

const OTHERS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: pinned}
spec:
  type: LoadBalancer
  loadBalancerIP: 192.168.1.240
  selector: {app: web}
  ports: [{port: 8080, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: other}
spec:
  type: LoadBalancer
  loadBalancerClass: example.com/another-lb
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: outside}
spec:
  type: LoadBalancer
  loadBalancerIP: 10.1.2.3
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"#;

/// The EXTERNAL-IP column of `kubectl get svc NAME`.
fn external_ip(cluster: &NetCluster, service: &str) -> String {
    let out = cluster.ok(&["get", "svc", service, "--no-headers"]);
    out.split_whitespace().nth(3).unwrap_or_default().to_owned()
}

/// Waits until the Service shows an address in EXTERNAL-IP.
fn wait_external_ip(cluster: &NetCluster, service: &str) -> String {
    eventually(30, || {
        let ip = external_ip(cluster, service);
        ip.starts_with("192.168.1.").then_some(ip)
    })
    .unwrap_or_else(|| {
        panic!(
            "{service} got no external IP:\n{}\n{}",
            cluster.ok(&["get", "svc", service, "-o", "yaml"]),
            cluster.logs()
        )
    })
}

/// The nodes (1-based) holding `ip` as an announced address.
fn holders(cluster: &NetCluster, nodes: usize, ip: &str) -> Vec<usize> {
    (1..=nodes)
        .filter(|i| {
            let out = cluster.in_netns(
                &cluster.node_name(*i),
                &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.contains(&format!("inet {ip}/32")) && l.contains("eth0:lb"))
        })
        .collect()
}

/// What curl from the external host gets from `url` (empty when it fails).
fn from_outside(cluster: &NetCluster, url: &str) -> String {
    let out = cluster.in_netns(
        cluster.topology().external_netns(),
        &["curl", "-s", "-m", "2", url],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn reached(cluster: &NetCluster, ip: &str, port: u16) -> bool {
    from_outside(cluster, &format!("http://{ip}:{port}/hostname")).starts_with("web-")
}

fn check_load_balancer(cluster: &NetCluster, mode: &str) {
    let node2 = cluster.node_name(2);
    cluster.ok(&["apply", "-f", &cluster.file("web.yaml", &app(&node2))]);
    cluster.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let ip = wait_external_ip(cluster, "web");
    assert_eq!(ip, "192.168.1.200", "the first address of the pool");
    let wide = cluster.ok(&["get", "svc", "web", "-o", "wide"]);
    assert!(
        wide.contains("LoadBalancer") && wide.contains("192.168.1.200   80:3"),
        "{wide}"
    );

    let announced = eventually(20, || {
        let nodes = holders(cluster, 2, &ip);
        (nodes.len() == 1).then_some(nodes)
    });
    assert!(
        announced.is_some(),
        "exactly one node should hold {ip}: {:?}\n{}",
        holders(cluster, 2, &ip),
        cluster.logs()
    );
    assert!(
        eventually(30, || reached(cluster, &ip, 80).then_some(())).is_some(),
        "{mode}: curl http://{ip}/ from the external host did not reach a backend:\n{}",
        cluster.logs()
    );

    cluster.ok(&["apply", "-f", &cluster.file("others.yaml", OTHERS)]);
    assert_eq!(wait_external_ip(cluster, "pinned"), "192.168.1.240");
    assert!(eventually(30, || reached(cluster, "192.168.1.240", 8080).then_some(())).is_some());
    assert_eq!(
        external_ip(cluster, "other"),
        "<pending>",
        "another class's Service"
    );
    assert_eq!(
        external_ip(cluster, "outside"),
        "<pending>",
        "outside the pool"
    );
    // kubectl describe tells why, from the controller's Events.
    let described = eventually(20, || {
        let web = cluster.ok(&["describe", "svc", "web"]);
        let outside = cluster.ok(&["describe", "svc", "outside"]);
        (web.contains("IPAllocated") && outside.contains("AllocationFailed"))
            .then_some((web, outside))
    });
    let (web, outside) = described.expect("allocation events");
    assert!(web.contains("Assigned IP [\"192.168.1.200\"]"), "{web}");
    assert!(
        outside.contains("\"10.1.2.3\" is not allowed in config"),
        "{outside}"
    );

    // Source ranges: the external host (192.168.1.100) is let in, then kept out.
    cluster.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"loadBalancerSourceRanges":["192.168.1.100/32"]}}"#,
    ]);
    assert!(eventually(20, || reached(cluster, &ip, 80).then_some(())).is_some());
    cluster.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"loadBalancerSourceRanges":["10.9.9.0/24"]}}"#,
    ]);
    assert!(
        eventually(20, || (!reached(cluster, &ip, 80)).then_some(())).is_some(),
        "{mode}: a source outside loadBalancerSourceRanges still got through"
    );
    assert!(
        reached(cluster, "192.168.1.240", 8080),
        "the ranges of one Service leave the others alone"
    );
    let rules = match mode {
        "nftables" => String::from_utf8_lossy(
            &cluster
                .in_netns(
                    &cluster.node_name(1),
                    &["nft", "list", "table", "ip", "kube-proxy"],
                )
                .stdout,
        )
        .into_owned(),
        _ => String::from_utf8_lossy(
            &cluster
                .in_netns(&cluster.node_name(1), &["iptables-save"])
                .stdout,
        )
        .into_owned(),
    };
    // The firewall chain admits only the range (iptables-save and nft print the
    // matches in their own order).
    let (chain, parts) = match mode {
        "nftables" => ("firewall-", ["ip saddr != ", "10.9.9.0/24", " drop"]),
        _ => (
            "-A KUBE-FW-",
            ["-s 10.9.9.0/24", "-j KUBE-EXT-", "loadbalancer IP"],
        ),
    };
    let mut in_chain = false;
    let firewall = rules.lines().any(|line| {
        in_chain = match mode {
            "nftables" => (in_chain || line.contains("chain firewall-")) && !line.contains('}'),
            _ => line.starts_with(chain),
        };
        in_chain && parts.iter().all(|p| line.contains(p))
    });
    assert!(
        firewall,
        "{mode} rules lack the firewall chain {chain}… with {parts:?}:\n{rules}"
    );
    cluster.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"loadBalancerSourceRanges":null}}"#,
    ]);
    assert!(eventually(20, || reached(cluster, &ip, 80).then_some(())).is_some());

    // externalTrafficPolicy: Local: a health check node port that answers 200 on the
    // node with the backends and 503 on the other, and only that node announces.
    cluster.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    let health = cluster.ok(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.healthCheckNodePort}",
    ]);
    assert!(!health.is_empty(), "no healthCheckNodePort allocated");
    let check = |node: usize| {
        let out = cluster.in_netns(
            cluster.topology().external_netns(),
            &[
                "curl",
                "-s",
                "-m",
                "2",
                "-w",
                "\n%{http_code}",
                &format!("http://{}:{health}/", cluster.node_ip(node)),
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let answered = eventually(20, || {
        let (with, without) = (check(2), check(1));
        (with.ends_with("200") && without.ends_with("503")).then_some((with, without))
    });
    let (with, without) = answered.unwrap_or_else(|| {
        panic!(
            "health checks: node2 {:?}, node1 {:?}\n{}",
            check(2),
            check(1),
            cluster.logs()
        )
    });
    assert!(with.contains("\"localEndpoints\": 2"), "{with}");
    assert!(without.contains("\"localEndpoints\": 0"), "{without}");
    assert!(
        eventually(20, || (holders(cluster, 2, &ip) == [2]).then_some(())).is_some(),
        "under Local only the node with endpoints announces: {:?}",
        holders(cluster, 2, &ip)
    );
    assert!(eventually(20, || reached(cluster, &ip, 80).then_some(())).is_some());

    // The seed's LoadBalancer Service (port 3000, nodePort 30080) gets the next address.
    cluster.ok(&[
        "apply",
        "-f",
        &crate::harness::manifest("004-service-python-loadbalancer.yaml").to_string_lossy(),
    ]);
    let python = wait_external_ip(cluster, "service-python");
    assert_eq!(python, "192.168.1.201");
    assert!(cluster
        .ok(&["get", "svc", "service-python"])
        .contains("3000:30080/TCP"));

    // Leaving LoadBalancer releases the address: status cleared, announcement gone,
    // and the next Service gets it.
    cluster.ok(&[
        "patch",
        "svc",
        "service-python",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    assert!(
        eventually(20, || (external_ip(cluster, "service-python") == "<none>"
            && holders(cluster, 2, &python).is_empty())
        .then_some(()))
        .is_some(),
        "the address of a Service that left LoadBalancer was not released"
    );
    cluster.ok(&["delete", "svc", "web"]);
    assert!(eventually(20, || holders(cluster, 2, &ip).is_empty().then_some(())).is_some());
    cluster.ok(&[
        "patch",
        "svc",
        "other",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    cluster.ok(&[
        "patch",
        "svc",
        "other",
        "-p",
        r#"{"spec":{"type":"LoadBalancer"}}"#,
    ]);
    assert_eq!(
        wait_external_ip(cluster, "other"),
        "192.168.1.200",
        "a freed address is reused"
    );
}

#[test]
fn load_balancers_in_iptables_mode() {
    let cluster = NetCluster::start(2);
    check_load_balancer(&cluster, "iptables");
}

#[test]
fn load_balancers_in_nftables_mode() {
    let cluster = NetCluster::start_with_proxy(2, &["--proxy-mode", "nftables"]);
    check_load_balancer(&cluster, "nftables");
}

/// A LoadBalancer Service announced by one of three nodes, with its backends on
/// another: the address, the announcing node, and the backends' node.
fn announced_elsewhere(cluster: &NetCluster) -> (String, usize) {
    cluster.ok(&[
        "apply",
        "-f",
        &cluster.file(
            "svc.yaml",
            r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"#,
        ),
    ]);
    let ip = wait_external_ip(cluster, "web");
    let owner = eventually(20, || match holders(cluster, 3, &ip).as_slice() {
        [one] => Some(*one),
        _ => None,
    })
    .unwrap_or_else(|| panic!("no single node announces {ip}:\n{}", cluster.logs()));
    let backends = (1..=3).find(|i| *i != owner).expect("another node");
    let manifest = app(&cluster.node_name(backends));
    let deployment = manifest.split("---").next().expect("the Deployment");
    cluster.ok(&["apply", "-f", &cluster.file("web.yaml", deployment)]);
    cluster.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(
        eventually(30, || reached(cluster, &ip, 80).then_some(())).is_some(),
        "{ip} not reached before the failover:\n{}",
        cluster.logs()
    );
    (ip, owner)
}

/// Node `owner` dies: its processes are killed and its link goes down.
fn kill_node(cluster: &mut NetCluster, owner: usize) {
    let gone = cluster.node_name(owner);
    for component in ["speaker", "kubelet", "proxy", "flannel"] {
        cluster.stop(&format!("{component}-{gone}"));
    }
    let down = cluster.in_netns(&gone, &["ip", "link", "set", "eth0", "down"]);
    assert!(down.status.success());
}

/// Waits until a node other than `owner` holds `ip` (the address stays on the dead
/// node's downed link) and the external host reaches the backends through it.
fn taken_over(cluster: &NetCluster, ip: &str, owner: usize) -> usize {
    let new_owner = eventually(90, || {
        let live: Vec<usize> = holders(cluster, 3, ip)
            .into_iter()
            .filter(|n| *n != owner)
            .collect();
        match live.as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    })
    .unwrap_or_else(|| panic!("no other node took {ip} over:\n{}", cluster.logs()));
    assert!(
        eventually(30, || reached(cluster, ip, 80).then_some(())).is_some(),
        "{ip} not reached after the failover:\n{}",
        cluster.logs()
    );
    new_owner
}

/// The node announcing an address goes away (its processes die, its link goes down,
/// its Node object is deleted): another node takes the address over and sends
/// gratuitous ARP, and the external host reaches the backends again.
#[test]
fn another_node_takes_over_when_the_announcing_node_is_deleted() {
    let mut cluster = NetCluster::start(3);
    let (ip, owner) = announced_elsewhere(&cluster);
    kill_node(&mut cluster, owner);
    let started = Instant::now();
    cluster.ok(&["delete", "node", &cluster.node_name(owner)]);
    let new_owner = taken_over(&cluster, &ip, owner);
    eprintln!(
        "{ip} moved from node{owner} to node{new_owner} and answered again {:.1}s after the Node was deleted",
        started.elapsed().as_secs_f64()
    );
}

/// The announcing node dies and nobody deletes it: once its kubelet has been silent
/// for the grace period, the node lifecycle controller marks it unreachable
/// (NotReady), and another node takes the address over.
#[test]
fn another_node_takes_over_when_the_announcing_node_stops_reporting() {
    let mut cluster = NetCluster::start_with_controller(
        3,
        &[
            "--node-monitor-grace-period",
            "15s",
            "--node-monitor-period",
            "1s",
        ],
    );
    let (ip, owner) = announced_elsewhere(&cluster);
    kill_node(&mut cluster, owner);
    let started = Instant::now();
    let new_owner = taken_over(&cluster, &ip, owner);
    let nodes = cluster.ok(&["get", "nodes"]);
    let dead = nodes
        .lines()
        .find(|l| l.starts_with(&cluster.node_name(owner)))
        .unwrap_or_default();
    assert!(dead.contains("NotReady"), "{nodes}");
    let reason = cluster.ok(&[
        "get",
        "node",
        &cluster.node_name(owner),
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
    ]);
    assert_eq!(reason, "NodeStatusUnknown");
    eprintln!(
        "{ip} moved from node{owner} to node{new_owner} and answered again {:.1}s after the node died (grace period 15 s)",
        started.elapsed().as_secs_f64()
    );
}
