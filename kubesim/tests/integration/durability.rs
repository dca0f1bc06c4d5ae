//! Acknowledged writes survive `kill -9`.

use crate::harness::ApiServer;

#[test]
fn acknowledged_writes_survive_kill_9() {
    let mut server = ApiServer::start();
    let mut manifest = String::new();
    for i in 0..50 {
        manifest.push_str(&format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: crash-{i}\ndata:\n  n: \"{i}\"\n"));
    }
    let path = server.file("many.yaml", &manifest);
    server.ok(&["apply", "-f", &path]);
    server.ok(&["create", "namespace", "after"]);
    let rv_before = server.ok(&[
        "get",
        "namespace",
        "after",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    server.restart();
    let names = server.ok(&["get", "configmaps", "-o", "name"]);
    for i in 0..50 {
        assert!(
            names.contains(&format!("configmap/crash-{i}\n")),
            "crash-{i} lost:\n{names}"
        );
    }
    assert_eq!(
        server.ok(&[
            "get",
            "namespace",
            "after",
            "-o",
            "jsonpath={.metadata.resourceVersion}"
        ]),
        rv_before
    );
    // Revisions keep growing after a restart.
    server.ok(&["create", "configmap", "later"]);
    let rv_after: u64 = server
        .ok(&[
            "get",
            "configmap",
            "later",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .expect("rv");
    assert!(rv_after > rv_before.parse::<u64>().expect("rv"));
}

#[test]
fn a_watch_from_a_revision_before_the_restart_is_told_410_expired() {
    let mut server = ApiServer::start();
    server.ok(&[
        "apply",
        "-f",
        &server.file(
            "one.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n",
        ),
    ]);
    server.restart();
    let config = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig");
    let url = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server")
        .to_string();
    let token = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("token")
        .to_string();
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "5",
            "-H",
            &format!("Authorization: Bearer {token}"),
        ])
        .arg(format!(
            "{url}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=1"
        ))
        .output()
        .expect("curl");
    let body = String::from_utf8_lossy(&out.stdout);
    let event: serde_json::Value =
        serde_json::from_str(body.lines().next().unwrap_or_default()).expect("one watch event");
    assert_eq!(event["type"], "ERROR", "{body}");
    assert_eq!(
        (
            event["object"]["code"].as_i64(),
            event["object"]["reason"].as_str()
        ),
        (Some(410), Some("Expired")),
        "{body}"
    );
}
