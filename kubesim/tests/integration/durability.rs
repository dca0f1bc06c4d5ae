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

/// Runs curl against the server with its token and returns the body as JSON.
fn get_json(server: &ApiServer, path: &str) -> serde_json::Value {
    let config = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig");
    let find = |key: &str| {
        config
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .expect("kubeconfig entry")
            .to_string()
    };
    let out = std::process::Command::new("curl")
        .args(["-sk", "-H"])
        .arg(format!("Authorization: Bearer {}", find("token: ")))
        .arg(format!("{}{path}", find("server: ")))
        .output()
        .expect("curl");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn a_list_continued_after_a_restart_is_told_410_and_how_to_go_on() {
    let mut server = ApiServer::start();
    let mut manifest = String::new();
    for name in ["a", "b", "c"] {
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
        ));
    }
    server.ok(&["apply", "-f", &server.file("three.yaml", &manifest)]);
    let cms = "/api/v1/namespaces/default/configmaps";
    let first = get_json(&server, &format!("{cms}?limit=1"));
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("continue token")
        .to_string();
    // Later pages read the first page's revision while it is kept...
    server.ok(&["create", "configmap", "b2"]);
    let second = get_json(&server, &format!("{cms}?limit=1&continue={token}"));
    assert_eq!(second["items"][0]["metadata"]["name"], "b");
    assert_eq!(
        second["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );
    // ...which a restart ends, as compaction ends it in etcd.
    server.restart();
    let expired = get_json(&server, &format!("{cms}?limit=1&continue={token}"));
    assert_eq!(
        (expired["code"].as_i64(), expired["reason"].as_str()),
        (Some(410), Some("Expired")),
        "{expired}"
    );
    assert!(
        expired["message"].as_str().is_some_and(|m| m.starts_with(
            "The provided continue parameter is too old to display a consistent list result."
        )),
        "{expired}"
    );
    let go_on = expired["metadata"]["continue"].as_str().expect("new token");
    let rest = get_json(&server, &format!("{cms}?continue={go_on}"));
    let names: Vec<&str> = rest["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["b", "b2", "c"], "the rest as it is now");
}
