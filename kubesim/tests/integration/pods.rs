//! Pods that are real: each a network namespace with an address from its node's pod
//! CIDR, a hostname and cluster DNS settings of its own, running a built-in workload
//! or a host command; checked from inside the pods with the host's own tools.

use crate::harness::eventually;
use crate::netcluster::NetCluster;

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  nodeSelector: {kubernetes.io/hostname: NODE1}
  containers:
  - name: nginx
    image: nginx:1.14.2
    ports: [{containerPort: 80}]
    readinessProbe:
      httpGet: {path: /, port: 80}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeSelector: {kubernetes.io/hostname: NODE1}
  containers:
  - name: sleeper
    image: busybox:1.36
    command: ["sleep", "infinity"]
"#;

#[test]
fn pods_get_addresses_hostnames_and_dns_settings_in_their_own_namespaces() {
    let cluster = NetCluster::start(1);
    let node = cluster.node_name(1);
    let file = cluster.file("pods.yaml", &PODS.replace("NODE1", &node));
    cluster.ok(&["apply", "-f", &file]);
    let web_ip = cluster.wait_running("default", "web");
    let client_ip = cluster.wait_running("default", "client");
    assert!(web_ip.starts_with("10.244."), "{web_ip}");
    assert_ne!(web_ip, client_ip);

    let ready = eventually(30, || {
        let out = cluster.ok(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (out == "True").then_some(())
    });
    assert!(
        ready.is_some(),
        "web never became Ready:\n{}",
        cluster.logs()
    );

    let client = cluster.pod_netns("default", "client");
    let page = cluster.in_netns(&client, &["curl", "-s", "-i", &format!("http://{web_ip}/")]);
    let page = String::from_utf8_lossy(&page.stdout).into_owned();
    assert!(page.contains("Welcome to nginx!"), "{page}");
    assert!(page.contains("Server: nginx/1.14.2"), "{page}");

    let addr = cluster.in_netns(&client, &["ip", "-4", "-o", "addr", "show", "eth0"]);
    let addr = String::from_utf8_lossy(&addr.stdout).into_owned();
    assert!(addr.contains(&format!("{client_ip}/24")), "{addr}");

    let log = cluster.ok(&["logs", "web"]);
    assert!(
        log.contains(&format!("{client_ip} - - [")),
        "access log: {log}"
    );
    assert!(
        log.contains("\"GET / HTTP/1.1\" 200 612"),
        "access log: {log}"
    );

    let status = cluster.ok(&["get", "pod", "web", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("json");
    assert_eq!(status["status"]["hostIP"], cluster.node_ip(1));
    assert_eq!(status["status"]["qosClass"], "BestEffort");
    let container = &status["status"]["containerStatuses"][0];
    assert_eq!(container["ready"], true);
    assert!(
        container["state"]["running"]["startedAt"].is_string(),
        "{container}"
    );

    cluster.ok(&["delete", "pod", "web", "client", "--grace-period=1"]);
    let gone = eventually(30, || {
        let out = cluster.kubectl(&["get", "pods", "-o", "name"]);
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .is_empty()
            .then_some(())
    });
    assert!(gone.is_some(), "pods were not deleted:\n{}", cluster.logs());
    assert!(
        !std::path::Path::new("/run/netns").join(&client).exists(),
        "the pod's namespace {client} is left"
    );
}
