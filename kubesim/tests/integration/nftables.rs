//! The checks of `services`, with `kubesim proxy --proxy-mode nftables` on every node:
//! cluster IPs from pods, node ports from the external host, session affinity,
//! hairpin, no-endpoint rejection, and the `ip kube-proxy` table a node shows.

use std::collections::BTreeSet;

use crate::harness::eventually;
use crate::netcluster::NetCluster;

const APP: &str = r#"
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
        args: ["netexec", "--http-port=8080"]
        ports: [{name: http, containerPort: 8080}]
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
  ports: [{name: http, port: 80, targetPort: http, nodePort: 30080}]
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

/// The hostnames that answered `count` requests to `url` from `pod`.
fn backends(cluster: &NetCluster, pod: &str, url: &str, count: usize) -> BTreeSet<String> {
    let script = format!("for i in $(seq {count}); do curl -s -m 2 {url}; echo; done");
    let out = cluster.ok(&["exec", pod, "--", "sh", "-c", &script]);
    out.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn services_forward_in_nftables_mode() {
    let cluster = NetCluster::start_with_proxy(2, &["--proxy-mode", "nftables"]);
    cluster.ok(&["apply", "-f", &cluster.file("app.yaml", APP)]);
    cluster.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let client_ip = cluster.wait_running("default", "client");
    let ip = cluster.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
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

    let url = format!("http://{ip}/hostname");
    let spread = eventually(30, || {
        let seen = backends(&cluster, "client", &url, 60);
        (seen == pods).then_some(seen)
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
    }

    cluster.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"sessionAffinity":"ClientIP"}}"#,
    ]);
    let sticky = eventually(20, || {
        (backends(&cluster, "client", &url, 15).len() == 1).then_some(())
    });
    assert!(
        sticky.is_some(),
        "ClientIP affinity did not pin one backend:\n{}",
        cluster.logs()
    );
    cluster.ok(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"sessionAffinity":"None"}}"#,
    ]);
    let spread_again = eventually(20, || {
        (backends(&cluster, "client", &url, 30).len() > 1).then_some(())
    });
    assert!(
        spread_again.is_some(),
        "switching affinity off did not spread again"
    );

    let first = pods.iter().next().expect("a backend").clone();
    let hairpin = eventually(20, || {
        backends(&cluster, &first, &url, 20)
            .contains(&first)
            .then_some(())
    });
    assert!(
        hairpin.is_some(),
        "{first} never reached itself through {url}"
    );

    let nobody = cluster.ok(&["get", "svc", "nobody", "-o", "jsonpath={.spec.clusterIP}"]);
    let refused = cluster.kubectl(&[
        "exec",
        "client",
        "--",
        "curl",
        "-s",
        "-m",
        "1",
        &format!("http://{nobody}:81/"),
    ]);
    assert_eq!(
        refused.status.code(),
        Some(7),
        "curl's exit code for a refused connection"
    );

    let node = cluster.node_name(1);
    let table = cluster.in_netns(&node, &["nft", "list", "table", "ip", "kube-proxy"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("map service-ips {"), "{table}");
    assert!(
        table.contains(&format!("{ip} . tcp . 80 : goto service-"))
            && table.contains("-default/web/tcp/http"),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "{nobody} . tcp . 81 comment \"default/nobody\" : goto reject-chain"
        )),
        "{table}"
    );
    assert!(table.contains("numgen random mod 3 vmap"), "{table}");
    let mode = cluster.in_netns(&node, &["curl", "-s", "http://127.0.0.1:10249/proxyMode"]);
    assert_eq!(String::from_utf8_lossy(&mode.stdout), "nftables");
}
