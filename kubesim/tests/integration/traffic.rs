//! The iptables proxy under the traffic that tests a proxy: UDP flows that must move
//! to a new backend, `externalTrafficPolicy: Local`, a rolling update with a client
//! hammering the NodePort, a proxy restart under an open connection, and `--cleanup`.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use crate::harness::eventually;
use crate::netcluster::NetCluster;

const UDP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: agnhost
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: ["netexec", "--http-port=8080", "--udp-port=8081"]
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: dns-like, protocol: UDP, port: 53, targetPort: 8081}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - {name: shell, image: busybox:1.36, command: ["sleep", "infinity"]}
"#;

/// Asks the UDP service for its hostname from a fixed source port, as a resolver
/// with a pinned port would.
fn udp_hostname(cluster: &NetCluster, ip: &str) -> Option<String> {
    let script = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('', 40000))\n\
         s.settimeout(1)\n\
         s.sendto(b'hostname', ('{ip}', 53))\n\
         print(s.recvfrom(100)[0].decode())\n"
    );
    let out = cluster.kubectl(&["exec", "client", "--", "python3", "-c", &script]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn a_pinned_udp_client_follows_a_replaced_backend() {
    let cluster = NetCluster::start(1);
    cluster.ok(&["apply", "-f", &cluster.file("udp.yaml", UDP)]);
    cluster.ok(&["rollout", "status", "deployment/echo", "--timeout=60s"]);
    cluster.wait_running("default", "client");
    let ip = cluster.ok(&["get", "svc", "echo", "-o", "jsonpath={.spec.clusterIP}"]);
    let old = cluster.ok(&[
        "get",
        "pods",
        "-l",
        "app=echo",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let first = eventually(20, || udp_hostname(&cluster, &ip).filter(|h| *h == old));
    assert!(
        first.is_some(),
        "{old} never answered over UDP:\n{}",
        cluster.logs()
    );

    cluster.ok(&["delete", "pod", &old, "--grace-period=1"]);
    let moved = eventually(30, || {
        udp_hostname(&cluster, &ip).filter(|h| !h.is_empty() && *h != old)
    });
    assert!(moved.is_some(), "the flow from port 40000 stayed on {old}");
}

const LOCAL: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: local, labels: {app: local}}
spec:
  nodeSelector: {kubernetes.io/hostname: NODE1}
  containers:
  - name: agnhost
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=8080"]
---
apiVersion: v1
kind: Service
metadata: {name: local}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: local}
  ports: [{port: 80, targetPort: 8080, nodePort: 30090}]
---
apiVersion: v1
kind: Service
metadata: {name: local-internal}
spec:
  internalTrafficPolicy: Local
  selector: {app: local}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: far}
spec:
  nodeSelector: {kubernetes.io/hostname: NODE2}
  containers:
  - {name: shell, image: busybox:1.36, command: ["sleep", "infinity"]}
"#;

#[test]
fn external_traffic_policy_local_keeps_the_client_address() {
    let cluster = NetCluster::start(2);
    let node1 = cluster.node_name(1);
    let node2 = cluster.node_name(2);
    let yaml = LOCAL.replace("NODE1", &node1).replace("NODE2", &node2);
    cluster.ok(&["apply", "-f", &cluster.file("local.yaml", &yaml)]);
    cluster.wait_running("default", "local");
    let ext = cluster.topology().external_netns().to_owned();
    let external_ip = cluster.topology().external_ip().to_string();
    let url = |node: usize| format!("http://{}:30090/clientip", cluster.node_ip(node));
    let seen = eventually(30, || {
        let out = cluster.in_netns(&ext, &["curl", "-s", "-m", "2", &url(1)]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (!text.is_empty()).then_some(text)
    })
    .unwrap_or_else(|| panic!("no answer on {}:\n{}", url(1), cluster.logs()));
    assert_eq!(
        seen.rsplit_once(':').map(|p| p.0),
        Some(external_ip.as_str())
    );
    // Node 2 has no local endpoint: once its proxy synced, outside traffic to its node
    // port is dropped (curl times out) rather than refused or answered.
    let dropped = eventually(30, || {
        let out = cluster.in_netns(&ext, &["curl", "-s", "-m", "2", &url(2)]);
        (out.status.code() == Some(28)).then_some(())
    });
    let rules = cluster.in_netns(&cluster.node_name(2), &["iptables-save", "-t", "filter"]);
    assert!(
        dropped.is_some(),
        "node 2 did not drop outside traffic:\n{}",
        String::from_utf8_lossy(&rules.stdout)
    );

    // internalTrafficPolicy: Local: the pod on node 1 reaches it, the one on node 2 not.
    cluster.wait_running("default", "far");
    let ip = cluster.ok(&[
        "get",
        "svc",
        "local-internal",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let url = format!("http://{ip}/hostname");
    let near = eventually(20, || {
        let out = cluster.kubectl(&["exec", "local", "--", "curl", "-s", "-m", "2", &url]);
        (String::from_utf8_lossy(&out.stdout) == "local").then_some(())
    });
    assert!(
        near.is_some(),
        "the local endpoint did not answer on node 1"
    );
    let far = eventually(20, || {
        let out = cluster.kubectl(&["exec", "far", "--", "curl", "-s", "-m", "2", &url]);
        (out.status.code() == Some(28)).then_some(())
    });
    assert!(
        far.is_some(),
        "node 2 has no local endpoint: its pods' traffic must be dropped"
    );
}

const ROLLING: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 25%}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: web
        image: nginx:1.25
        ports: [{containerPort: 80}]
        readinessProbe:
          httpGet: {path: /, port: 80}
          periodSeconds: 1
        lifecycle:
          preStop:
            sleep: {seconds: 3}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 80, nodePort: 30000}]
"#;

#[test]
fn a_rolling_update_behind_a_node_port_loses_no_request() {
    let mut cluster = NetCluster::start(2);
    cluster.ok(&["apply", "-f", &cluster.file("web.yaml", ROLLING)]);
    cluster.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let url = format!("http://{}:30000/", cluster.node_ip(1));
    let ext = cluster.topology().external_netns().to_owned();
    let ready = eventually(20, || {
        let out = cluster.in_netns(
            &ext,
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "2",
                &url,
            ],
        );
        (String::from_utf8_lossy(&out.stdout) == "200").then_some(())
    });
    assert!(
        ready.is_some(),
        "the NodePort never answered:\n{}",
        cluster.logs()
    );

    // The hammer runs until the file `stop` appears, one new connection per request.
    let stop = cluster.dir.path().join("stop");
    let script = format!(
        "while [ ! -e {stop} ]; do curl -s -o /dev/null -w '%{{http_code}}\\n' -m 2 {url}; done",
        stop = stop.display()
    );
    let hammer = Command::new("ip")
        .args(["netns", "exec", &ext, "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client");
    cluster.ok(&["set", "image", "deployment/web", "web=nginx:1.27"]);
    cluster.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    std::thread::sleep(std::time::Duration::from_secs(2));
    std::fs::write(&stop, "").expect("stop the client");
    let codes = hammer.wait_with_output().expect("client output");
    let codes = String::from_utf8_lossy(&codes.stdout).into_owned();
    let total = codes.lines().count();
    let failed: Vec<&str> = codes.lines().filter(|c| *c != "200").collect();
    assert!(total > 50, "the client made only {total} requests");
    assert!(
        failed.is_empty(),
        "{} of {total} requests failed: {failed:?}",
        failed.len()
    );
    let versions = cluster.in_netns(&ext, &["curl", "-s", "-I", &url]);
    assert!(String::from_utf8_lossy(&versions.stdout).contains("Server: nginx/1.27"));

    // A connection opened before a proxy restart survives it.
    let client = cluster.node_name(2);
    let mut conversation = Command::new("ip")
        .args(["netns", "exec", &client, "python3", "-c", KEEPALIVE])
        .arg(cluster.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the keep-alive client");
    let mut reply = [0u8; 3];
    let mut out = conversation.stdout.take().expect("stdout");
    out.read_exact(&mut reply).expect("first answer");
    assert_eq!(&reply, b"200");
    cluster.restart(&format!("proxy-{client}"));
    let healthy = eventually(20, || {
        let out = cluster.in_netns(&client, &["curl", "-s", "http://127.0.0.1:10256/healthz"]);
        String::from_utf8_lossy(&out.stdout)
            .contains("lastUpdated")
            .then_some(())
    });
    assert!(
        healthy.is_some(),
        "the restarted proxy did not report healthy"
    );
    let mut input = conversation.stdin.take().expect("stdin");
    input.write_all(b"\n").expect("ask again");
    out.read_exact(&mut reply)
        .expect("second answer on the same connection");
    assert_eq!(&reply, b"200");
    drop(input);
    let _ = conversation.wait();

    // --cleanup removes every chain and jump the proxy made.
    cluster.stop(&format!("proxy-{client}"));
    let cleanup = Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args(["proxy", "--cleanup", "--netns", &client])
        .output()
        .expect("kubesim proxy --cleanup");
    assert!(
        cleanup.status.success(),
        "{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    let left = cluster.in_netns(&client, &["iptables-save"]);
    let left = String::from_utf8_lossy(&left.stdout).into_owned();
    assert!(!left.contains("KUBE-"), "left behind:\n{left}");
}

/// Sends two requests over one keep-alive connection to `argv[1]:80`, printing each
/// status code; the second waits for a line on stdin.
const KEEPALIVE: &str = r#"
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], 80, timeout=10)
c.request("GET", "/"); r = c.getresponse(); r.read()
sys.stdout.write(str(r.status)); sys.stdout.flush()
sys.stdin.readline()
c.request("GET", "/"); r = c.getresponse(); r.read()
sys.stdout.write(str(r.status)); sys.stdout.flush()
"#;
