//! The cluster DNS as pods meet it: CoreDNS's Deployment run by `kubesim dns` behind
//! kube-dns (10.96.0.10), reached through kube-proxy, asked with the real `dig` and
//! `nslookup` from inside pods, over UDP and TCP, for every record type of the
//! Kubernetes DNS specification.

use std::collections::BTreeSet;

use crate::harness::eventually;
use crate::netcluster::NetCluster;

const APPS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: nginx}
spec:
  replicas: 2
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: nginx-svc}
spec:
  selector: {app: nginx}
  ports: [{name: http, port: 80, targetPort: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: sql, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  containers:
  - {name: sleeper, image: busybox:1.36, command: ["sleep", "infinity"]}
---
apiVersion: v1
kind: Service
metadata: {name: docs}
spec:
  type: ExternalName
  externalName: docs.example.org
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
  - {name: shell, image: busybox:1.36, command: ["sleep", "infinity"]}
"#;

/// `dig +short` inside the client pod, with extra options.
fn dig(cluster: &NetCluster, options: &[&str]) -> Vec<String> {
    let mut args = vec!["exec", "client", "--", "dig", "+short"];
    args.extend_from_slice(options);
    let out = cluster.kubectl(&args);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

/// The status line (`status: NOERROR`) of a full `dig` answer.
fn status(cluster: &NetCluster, name: &str, kind: &str) -> String {
    let out = cluster.ok(&["exec", "client", "--", "dig", name, kind]);
    out.lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or_default().to_owned())
        .unwrap_or_else(|| panic!("no status in:\n{out}"))
}

#[test]
fn pods_resolve_the_cluster_names_through_kube_dns() {
    let cluster = NetCluster::start_with_dns(2);
    cluster.ok(&["apply", "-f", &cluster.file("apps.yaml", APPS)]);
    cluster.ok(&["rollout", "status", "deployment/nginx", "--timeout=90s"]);
    cluster.wait_running("default", "client");
    let db_ip = cluster.wait_running("default", "db-0");
    let ip = cluster.ok(&[
        "get",
        "svc",
        "nginx-svc",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let fqdn = "nginx-svc.default.svc.cluster.local";

    let answered = eventually(30, || {
        (dig(&cluster, &["+notcp", fqdn]) == [ip.as_str()]).then_some(())
    });
    assert!(answered.is_some(), "{fqdn} over UDP:\n{}", cluster.logs());
    assert_eq!(dig(&cluster, &["+tcp", fqdn]), [ip.as_str()], "over TCP");
    assert_eq!(
        dig(&cluster, &["+search", "nginx-svc"]),
        [ip.as_str()],
        "the search path"
    );
    // The client's node programs nginx-svc on its own schedule: ask until it has.
    let page = eventually(30, || {
        let out = cluster.kubectl(&[
            "exec",
            "client",
            "--",
            "curl",
            "-s",
            "-m",
            "2",
            "http://nginx-svc/",
        ]);
        let page = String::from_utf8_lossy(&out.stdout).into_owned();
        page.contains("Welcome to nginx!").then_some(page)
    });
    assert!(
        page.is_some(),
        "curl by short name did not reach nginx:\n{}",
        cluster.logs()
    );
    let lookup = cluster.ok(&["exec", "client", "--", "nslookup", "nginx-svc.default"]);
    assert!(lookup.contains(&format!("Address: {ip}")), "{lookup}");

    // SRV for a named port, with the target's address as glue.
    let srv = dig(
        &cluster,
        &["SRV", "_http._tcp.nginx-svc.default.svc.cluster.local"],
    );
    assert_eq!(srv, [format!("0 100 80 {fqdn}.")]);
    // PTR for the cluster IP.
    assert_eq!(dig(&cluster, &["-x", &ip]), [format!("{fqdn}.")]);
    // Headless: the pod's own record and the service's A set.
    assert_eq!(
        dig(&cluster, &["db-0.db.default.svc.cluster.local"]),
        [db_ip.as_str()]
    );
    assert_eq!(
        dig(&cluster, &["db.default.svc.cluster.local"]),
        [db_ip.as_str()]
    );
    // ExternalName: a CNAME.
    assert_eq!(
        dig(&cluster, &["docs.default.svc.cluster.local", "CNAME"]),
        ["docs.example.org."]
    );
    // The schema version, and a pod's dashed-address record.
    assert_eq!(
        dig(&cluster, &["TXT", "dns-version.cluster.local"]),
        ["\"1.1.0\""]
    );
    let dashed = format!("{}.default.pod.cluster.local", db_ip.replace('.', "-"));
    assert_eq!(dig(&cluster, &[&dashed]), [db_ip.as_str()]);
    // NXDOMAIN for a name that does not exist, NODATA for a type it does not have.
    assert_eq!(
        status(&cluster, "nothere.default.svc.cluster.local", "A"),
        "NXDOMAIN"
    );
    assert_eq!(status(&cluster, fqdn, "MX"), "NOERROR");
    assert!(dig(&cluster, &[fqdn, "MX"]).is_empty());

    // A second db pod: the headless Service's A set grows.
    let second = "apiVersion: v1\nkind: Pod\nmetadata: {name: db-1, labels: {app: db}}\nspec:\n  containers:\n  - {name: sleeper, image: busybox:1.36, command: [\"sleep\", \"infinity\"]}\n";
    cluster.ok(&["apply", "-f", &cluster.file("db-1.yaml", second)]);
    let db1_ip = cluster.wait_running("default", "db-1");
    let both: BTreeSet<String> = [db_ip.clone(), db1_ip].into();
    let grown = eventually(30, || {
        let set: BTreeSet<String> = dig(&cluster, &["db.default.svc.cluster.local"])
            .into_iter()
            .collect();
        (set == both).then_some(())
    });
    assert!(
        grown.is_some(),
        "the headless A set did not follow the pods"
    );

    // An ExternalName change is answered within the TTL (30 s).
    cluster.ok(&[
        "patch",
        "svc",
        "docs",
        "-p",
        r#"{"spec":{"externalName":"manual.example.org"}}"#,
    ]);
    let changed = eventually(35, || {
        (dig(&cluster, &["docs.default.svc.cluster.local", "CNAME"]) == ["manual.example.org."])
            .then_some(())
    });
    assert!(
        changed.is_some(),
        "the ExternalName change was not answered"
    );
}
