//! Services that forward for real, through `kubesim proxy` in iptables mode on every
//! node: cluster IPs from pods, node ports from the external host, session affinity,
//! hairpin, client addresses, no-endpoint rejection, and the `kubernetes` Service.

use std::collections::BTreeSet;

use crate::harness::eventually;
use crate::netcluster::NetCluster;

/// Three agnhost netexec backends (HTTP on 8080, UDP on 8081) behind the NodePort
/// Service `web` (80 and UDP 90), a Service `nobody` without endpoints, and a client
/// pod.
pub(crate) const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: agnhost
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: ["netexec", "--http-port=8080", "--udp-port=8081"]
        ports: [{name: http, containerPort: 8080}, {name: udp, containerPort: 8081, protocol: UDP}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
  - {name: udp, port: 90, targetPort: udp, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: nobody}
spec:
  selector: {app: nobody}
  ports: [{port: 81}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - {name: shell, image: busybox:1.36, command: ["sleep", "infinity"]}
"#;

/// The hostnames that answered `count` requests to `url` from the client pod.
pub(crate) fn backends(cluster: &NetCluster, pod: &str, url: &str, count: usize) -> Vec<String> {
    let script = format!("for i in $(seq {count}); do curl -s -m 2 {url}; echo; done");
    let out = cluster.ok(&["exec", pod, "--", "sh", "-c", &script]);
    out.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) fn distinct(answers: &[String]) -> BTreeSet<String> {
    answers.iter().cloned().collect()
}

/// What [`deploy`] set up: the `web` Service's cluster IP, its three backends, the
/// client pod's address, and the cluster IP of `nobody` (a Service without endpoints).
pub(crate) struct Deployed {
    pub ip: String,
    pub pods: BTreeSet<String>,
    pub client_ip: String,
    pub nobody: String,
}

/// Applies [`APP`] and waits until it runs.
pub(crate) fn deploy(cluster: &NetCluster) -> Deployed {
    cluster.ok(&["apply", "-f", &cluster.file("app.yaml", APP)]);
    cluster.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let client_ip = cluster.wait_running("default", "client");
    let ip = cluster.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let nobody = cluster.ok(&["get", "svc", "nobody", "-o", "jsonpath={.spec.clusterIP}"]);
    let pods: BTreeSet<String> = cluster
        .ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(pods.len(), 3);
    Deployed {
        ip,
        pods,
        client_ip,
        nobody,
    }
}

/// The checks every mode that forwards in the kernel passes: all backends reached
/// through the cluster IP, the client's own address seen (no SNAT), the node port on
/// every node from the external host, ClientIP affinity on and off, hairpin, and a
/// Service without endpoints refused.
pub(crate) fn check_forwarding(cluster: &NetCluster, app: &Deployed) {
    let Deployed {
        ip,
        pods,
        client_ip,
        nobody,
    } = app;
    // The endpoints reach every node's proxy; then all three backends answer.
    let url = format!("http://{ip}/hostname");
    let spread = eventually(30, || {
        let seen = distinct(&backends(cluster, "client", &url, 60));
        (seen == *pods).then_some(seen)
    });
    assert!(
        spread.is_some(),
        "60 requests to {url} did not reach all of {pods:?}:\n{}",
        cluster.logs()
    );

    let seen = cluster.ok(&[
        "exec",
        "client",
        "--",
        "curl",
        "-s",
        &format!("http://{ip}/clientip"),
    ]);
    assert_eq!(
        seen.rsplit_once(':').map(|p| p.0),
        Some(client_ip.as_str()),
        "no SNAT from pods"
    );

    for node in 1..=2 {
        let node_ip = cluster.node_ip(node);
        let answer = eventually(20, || {
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
            pods.contains(&answer).then_some(answer)
        });
        assert!(
            answer.is_some(),
            "NodePort on {node_ip} did not answer with a backend"
        );
    }

    cluster.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"sessionAffinity":"ClientIP"}}"#,
    ]);
    let sticky = eventually(20, || {
        let seen = distinct(&backends(cluster, "client", &url, 15));
        (seen.len() == 1).then_some(())
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
        (distinct(&backends(cluster, "client", &url, 30)).len() > 1).then_some(())
    });
    assert!(
        spread_again.is_some(),
        "switching affinity off did not spread again"
    );

    // Hairpin: a backend reaches itself through its own Service.
    let first = pods.iter().next().expect("a backend").clone();
    let hairpin = eventually(20, || {
        backends(cluster, &first, &url, 20)
            .contains(&first)
            .then_some(())
    });
    assert!(
        hairpin.is_some(),
        "{first} never reached itself through {url}"
    );

    let refused = eventually(20, || {
        let url = format!("http://{nobody}:81/");
        let out = cluster.kubectl(&["exec", "client", "--", "curl", "-s", "-m", "1", &url]);
        (out.status.code() == Some(7)).then_some(())
    });
    assert!(
        refused.is_some(),
        "a Service without endpoints is not refused (curl exit 7)"
    );
}

#[test]
fn services_forward_in_iptables_mode() {
    let cluster = NetCluster::start(2);
    let app = deploy(&cluster);
    check_forwarding(&cluster, &app);
    check_explain(&cluster, &app);
    let Deployed { ip, client_ip, .. } = &app;

    let api = cluster.ok(&[
        "exec",
        "client",
        "--",
        "curl",
        "-sk",
        "https://10.96.0.1/version",
    ]);
    assert!(
        api.contains("\"gitVersion\":\"v1.33.0"),
        "the apiserver answered: {api}"
    );

    // In-cluster credentials, as a client library in a pod reads them.
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    let script = format!(
        "curl -s --cacert {sa}/ca.crt -H \"Authorization: Bearer $(cat {sa}/token)\" \
         https://10.96.0.1/api/v1/namespaces/$(cat {sa}/namespace)/pods/client"
    );
    let me = cluster.ok(&["exec", "client", "--", "sh", "-c", &script]);
    let me: serde_json::Value = serde_json::from_str(&me).expect("the pod as JSON");
    assert_eq!(me["status"]["podIP"], client_ip.as_str());

    let rules = cluster.in_netns(&cluster.node_name(1), &["iptables-save", "-t", "nat"]);
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(
        rules.contains(&format!(
            "-A KUBE-SERVICES -d {ip}/32 -p tcp -m comment --comment \"default/web:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-"
        )),
        "{rules}"
    );
    assert!(rules.contains("-A KUBE-NODEPORTS -p tcp -m comment --comment \"default/web:http\" -m tcp --dport 30080 -j KUBE-EXT-"), "{rules}");
    assert!(
        rules.contains("-m statistic --mode random --probability 0.33333333349"),
        "{rules}"
    );
}

/// `kubesim explain service` tells the path from the live rules: the Service's
/// KUBE-SERVICES rule, the endpoint choice, the DNATs, and for an endpoint on the other
/// node the VXLAN route, neighbour and FDB entry.
fn check_explain(cluster: &NetCluster, app: &Deployed) {
    let node = cluster.node_name(1);
    let kubeconfig = cluster.kubeconfig.to_str().expect("utf-8").to_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args([
            "explain",
            "service",
            "web",
            "--node",
            &node,
            "--kubeconfig",
            &kubeconfig,
        ])
        .output()
        .expect("kubesim explain");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("NodePort {}", app.ip)), "{text}");
    assert!(text.contains("-j KUBE-SVC-"), "{text}");
    // Three backends, for the TCP and the UDP port.
    assert_eq!(text.matches("DNAT --to-destination").count(), 6, "{text}");
    let remote = cluster.node_ip(2);
    assert!(
        text.contains(&format!("wrapped in UDP to {remote}:8472")),
        "an endpoint on node 2 is reached over VXLAN: {text}"
    );
}

/// The ipvs mode on a kernel without IPVS: kube-proxy says why and proxies with
/// iptables.
#[test]
fn ipvs_mode_falls_back_to_iptables_without_kernel_ipvs() {
    let cluster = NetCluster::start_with_proxy(1, &["--proxy-mode", "ipvs"]);
    let node = cluster.node_name(1);
    let said = eventually(20, || {
        let log = cluster.log(&format!("proxy-{node}"));
        (log.contains("Can't use the IPVS proxier") && log.contains("Using iptables Proxier"))
            .then_some(log)
    });
    let log = said.unwrap_or_else(|| panic!("no fallback in the log:\n{}", cluster.logs()));
    assert!(
        log.contains("/proc/net/ip_vs"),
        "the reason names what is missing: {log}"
    );
    let mode = cluster.in_netns(&node, &["curl", "-s", "http://127.0.0.1:10249/proxyMode"]);
    assert_eq!(String::from_utf8_lossy(&mode.stdout), "iptables");
    let synced = eventually(20, || {
        let rules = cluster.in_netns(&node, &["iptables-save", "-t", "nat"]);
        String::from_utf8_lossy(&rules.stdout)
            .contains(":KUBE-SERVICES")
            .then_some(())
    });
    assert!(synced.is_some(), "no iptables rules:\n{}", cluster.logs());
}
