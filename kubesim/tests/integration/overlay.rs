//! Pods on two nodes reach each other across the VXLAN overlay without NAT, seen
//! through the real kubectl (exec, logs), the pods' own view (hostname, resolv.conf)
//! and a capture on the underlay; removing a node removes the routes to it.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::eventually;
use crate::netcluster::NetCluster;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: server
spec:
  nodeSelector: {kubernetes.io/hostname: NODE2}
  containers:
  - name: agnhost
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=8080", "--udp-port=8081"]
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeSelector: {kubernetes.io/hostname: NODE1}
  containers:
  - name: shell
    image: busybox:1.36
    command: ["sleep", "infinity"]
"#;

#[test]
fn pods_on_two_nodes_talk_across_the_overlay_without_nat() {
    let cluster = NetCluster::start(2);
    let (node1, node2) = (cluster.node_name(1), cluster.node_name(2));
    let yaml = PODS.replace("NODE1", &node1).replace("NODE2", &node2);
    cluster.ok(&["apply", "-f", &cluster.file("pods.yaml", &yaml)]);
    let server_ip = cluster.wait_running("default", "server");
    let client_ip = cluster.wait_running("default", "client");
    assert_ne!(
        server_ip.rsplit_once('.').map(|p| p.0),
        client_ip.rsplit_once('.').map(|p| p.0),
        "the pods should sit in different node subnets"
    );

    // Every node publishes its flannel lease on its Node.
    for (node, ip) in [(&node1, cluster.node_ip(1)), (&node2, cluster.node_ip(2))] {
        let annotations = cluster.ok(&[
            "get",
            "node",
            node,
            "-o",
            "jsonpath={.metadata.annotations}",
        ]);
        let annotations: serde_json::Value = serde_json::from_str(&annotations).expect("json");
        assert_eq!(
            annotations["flannel.alpha.coreos.com/backend-type"],
            "vxlan"
        );
        assert_eq!(
            annotations["flannel.alpha.coreos.com/public-ip"],
            ip.as_str()
        );
        let data = annotations["flannel.alpha.coreos.com/backend-data"]
            .as_str()
            .unwrap_or_default();
        let data: serde_json::Value = serde_json::from_str(data).expect("backend-data JSON");
        assert_eq!(data["VNI"], 1);
        let link = cluster.in_netns(node, &["cat", "/sys/class/net/flannel.1/address"]);
        assert_eq!(
            data["VtepMAC"],
            String::from_utf8_lossy(&link.stdout).trim()
        );
    }

    // A capture on the underlay bridge while the client calls the server.
    let capture = Command::new("ip")
        .args(["netns", "exec", cluster.topology().underlay_netns()])
        .args([
            "timeout", "20", "tcpdump", "-i", "br0", "-n", "-l", "-c", "4", "udp", "port", "8472",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcpdump");
    std::thread::sleep(Duration::from_secs(1));

    let url = format!("http://{server_ip}:8080/clientip");
    let seen = cluster.ok(&["exec", "client", "--", "curl", "-s", &url]);
    let (ip, _port) = seen.trim().rsplit_once(':').expect("host:port");
    assert_eq!(
        ip, client_ip,
        "the server saw the client's own pod IP (no NAT)"
    );

    let capture = capture.wait_with_output().expect("tcpdump");
    let frames = String::from_utf8_lossy(&capture.stdout).into_owned();
    let (ip1, ip2) = (cluster.node_ip(1), cluster.node_ip(2));
    assert!(
        frames.contains(&format!("{ip1}.")) && frames.contains(&format!("{ip2}.8472")),
        "VXLAN frames between {ip1} and {ip2} on the underlay:\n{frames}\n{}",
        String::from_utf8_lossy(&capture.stderr)
    );

    let hostname = cluster.ok(&["exec", "client", "--", "hostname"]);
    assert_eq!(hostname.trim(), "client");
    let own = cluster.ok(&["exec", "client", "--", "hostname", "-i"]);
    assert_eq!(own.trim(), client_ip);
    let resolv = cluster.ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.96.0.10\n"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5\n"), "{resolv}");

    let out = cluster.kubectl(&["exec", "client", "--", "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "kubectl passes the exit code on"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("oops"));
    let piped = cluster
        .command(&cluster.kubectl)
        .args(["exec", "-i", "client", "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"across the overlay\n")?;
            child.wait_with_output()
        })
        .expect("kubectl exec -i");
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout),
        "ACROSS THE OVERLAY\n"
    );

    let logs = cluster.ok(&["logs", "server"]);
    assert!(logs.contains("GET /clientip"), "netexec's log: {logs}");

    // Node 2 goes: node 1 drops the route to its pod subnet.
    let cidr2 = cluster.ok(&["get", "node", &node2, "-o", "jsonpath={.spec.podCIDR}"]);
    let route = |netns: &str| {
        let out = cluster.in_netns(netns, &["ip", "route", "show", "dev", "flannel.1"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(route(&node1).contains(&cidr2), "{}", route(&node1));
    cluster.ok(&["delete", "node", &node2]);
    let gone = eventually(10, || (!route(&node1).contains(&cidr2)).then_some(()));
    assert!(
        gone.is_some(),
        "node1 still routes {cidr2}: {}",
        route(&node1)
    );
}
