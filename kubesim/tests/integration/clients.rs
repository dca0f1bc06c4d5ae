//! Other real clients: kube-rs (typed API, watcher and reflector, server-side apply),
//! the Python `kubernetes` package, and curl for the raw HTTP contract.

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};

use crate::harness::{eventually, ApiServer};

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "kube-rs"}},
        "data": {"value": value},
    }))
    .expect("configmap")
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_crud_and_reflector_follow_changes() {
    let server = ApiServer::start();
    let client = server.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");

    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(
            api.clone(),
            watcher::Config::default().labels("app=kube-rs"),
        ),
    )
    .applied_objects()
    .boxed();
    let task = tokio::spawn(async move { stream.for_each(|_| async {}).await });
    reader.wait_until_ready().await.expect("reflector ready");

    for i in 0..20 {
        api.create(
            &PostParams::default(),
            &configmap(&format!("cm-{i}"), "one"),
        )
        .await
        .expect("create");
    }
    let conflict = api
        .create(&PostParams::default(), &configmap("cm-0", "one"))
        .await;
    assert!(
        matches!(conflict, Err(kube::Error::Api(ref s)) if s.code == 409 && s.reason == "AlreadyExists"),
        "{conflict:?}"
    );

    // The creator owns data.value, so taking it over by apply needs force, as on a real cluster.
    let patch =
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"value": "two"}});
    let conflict = api
        .patch(
            "cm-3",
            &PatchParams::apply("kube-rs-test"),
            &Patch::Apply(&patch),
        )
        .await;
    assert!(
        matches!(conflict, Err(kube::Error::Api(ref s)) if s.code == 409 && s.message.contains(".data.value")),
        "{conflict:?}"
    );
    let applied = api
        .patch(
            "cm-3",
            &PatchParams::apply("kube-rs-test").force(),
            &Patch::Apply(&patch),
        )
        .await
        .expect("apply");
    assert_eq!(
        applied
            .data
            .as_ref()
            .and_then(|d| d.get("value"))
            .map(String::as_str),
        Some("two")
    );
    api.delete("cm-4", &DeleteParams::default())
        .await
        .expect("delete");

    let mut stale = api.get("cm-5").await.expect("get");
    api.patch(
        "cm-5",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"value": "new"}})),
    )
    .await
    .expect("merge");
    stale.data = Some([("value".to_string(), "lost".to_string())].into());
    let err = api.replace("cm-5", &PostParams::default(), &stale).await;
    assert!(
        matches!(err, Err(kube::Error::Api(ref s)) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = reader.state();
        let three = state
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some("cm-3"));
        let ok = state.len() == 19
            && three
                .and_then(|c| c.data.as_ref())
                .and_then(|d| d.get("value"))
                .map(String::as_str)
                == Some("two");
        if ok {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reflector has {} objects",
            state.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = api
        .list(&ListParams::default().labels("app=kube-rs").limit(7))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 7);
    assert!(
        listed.metadata.continue_.is_some(),
        "a limited list has a continue token"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_creates_deletes_collections_and_meets_preconditions() {
    let server = ApiServer::start();
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    // A client that does not clear what it read before creating again is refused.
    let stale = api
        .create(&PostParams::default(), &configmap("once", "1"))
        .await
        .expect("create");
    api.delete("once", &DeleteParams::default())
        .await
        .expect("delete");
    let refused = api.create(&PostParams::default(), &stale).await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 500
            && s.reason.is_empty()
            && s.message == "resourceVersion should not be set on objects to be created"),
        "{refused:?}"
    );

    let created = api
        .create(&PostParams::default(), &configmap("guarded", "1"))
        .await
        .expect("create");
    let wrong = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: Some("00000000-0000-0000-0000-000000000000".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let conflict = api.delete("guarded", &wrong).await;
    assert!(
        matches!(conflict, Err(kube::Error::Api(ref s)) if s.code == 409
            && s.message.contains("the UID in the precondition (00000000-0000-0000-0000-000000000000) does not match the UID in record")),
        "{conflict:?}"
    );
    let right = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: created.metadata.uid.clone(),
            resource_version: created.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    api.delete("guarded", &right).await.expect("delete");

    for (name, app) in [("one", "kube-rs"), ("two", "kube-rs"), ("other", "else")] {
        let mut cm = configmap(name, "x");
        cm.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=kube-rs"),
        )
        .await
        .expect("delete collection");
    let names: Vec<String> = deleted
        .left()
        .expect("a list of what was deleted")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(names, ["one", "two"]);
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, ["other"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_secrets_keep_bytes_and_fold_string_data() {
    let server = ApiServer::start();
    let api: Api<Secret> = Api::namespaced(server.client().await, "default");
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kube-rs"},
        "data": {"raw": "AP8B"},
        "stringData": {"token": "t0k3n"},
    }))
    .expect("secret");
    api.create(&PostParams::default(), &secret)
        .await
        .expect("create");
    let got = api.get("kube-rs").await.expect("get");
    assert_eq!(got.type_.as_deref(), Some("Opaque"));
    assert_eq!(got.string_data, None);
    assert_eq!(
        got.data,
        Some(
            [
                ("raw".to_string(), ByteString(vec![0, 255, 1])),
                ("token".to_string(), ByteString(b"t0k3n".to_vec())),
            ]
            .into()
        )
    );

    let freeze = Patch::Merge(serde_json::json!({"immutable": true}));
    api.patch("kube-rs", &PatchParams::default(), &freeze)
        .await
        .expect("make immutable");
    let change = Patch::Merge(serde_json::json!({"stringData": {"token": "other"}}));
    let refused = api.patch("kube-rs", &PatchParams::default(), &change).await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 422
            && s.message == "Secret \"kube-rs\" is invalid: data: Forbidden: field is immutable when `immutable` is set"),
        "{refused:?}"
    );
}

#[test]
fn python_client_lists_creates_and_watches() {
    let server = ApiServer::start();
    let python = std::env::var("KUBESIM_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/venv/bin/python").to_string()
    });
    let script = r#"
import sys
from kubernetes import client, config, watch
config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
names = sorted(ns.metadata.name for ns in v1.list_namespace().items)
print("namespaces", " ".join(names))
svc = client.V1Service(metadata=client.V1ObjectMeta(name="py-svc"),
    spec=client.V1ServiceSpec(selector={"app": "py"}, ports=[client.V1ServicePort(port=80, target_port=8080)]))
created = v1.create_namespaced_service("default", svc)
print("clusterIP", created.spec.cluster_ip)
w = watch.Watch()
for event in w.stream(v1.list_namespaced_service, "default", timeout_seconds=5):
    if event["object"].metadata.name == "py-svc":
        print("event", event["type"], event["object"].metadata.name)
        w.stop()
for name, tier in [("py-a", "web"), ("py-b", "db"), ("py-c", "web")]:
    v1.create_namespaced_config_map("default", client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels={"tier": tier})))
v1.delete_collection_namespaced_config_map("default", label_selector="tier=web")
print("left", " ".join(sorted(c.metadata.name for c in v1.list_namespaced_config_map("default").items)))
apps = client.AppsV1Api()
try:
    apps.read_namespaced_deployment("missing", "default")
except client.exceptions.ApiException as e:
    print("status", e.status, e.reason)
"#;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&server.kubeconfig)
        .output();
    let out = out.unwrap_or_else(|e| panic!("run {python} (scripts/install-deps makes it): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("namespaces default kube-node-lease kube-public kube-system"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("clusterIP 10.")),
        "{text}"
    );
    assert!(text.contains("event ADDED py-svc"), "{text}");
    assert!(text.contains("left py-b\n"), "{text}");
    assert!(text.contains("status 404 Not Found"), "{text}");
}

/// The `Authorization` header of the server's kubeconfig.
fn auth(server: &ApiServer) -> String {
    let config = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig");
    let token = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("token");
    format!("Authorization: Bearer {token}")
}

fn curl(server: &ApiServer, args: &[&str]) -> (String, String) {
    let config = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig");
    let url = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server url")
        .to_string();
    let out = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}"])
        .args(args.iter().map(|a| a.replace("URL", &url)))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_string(), code.to_string())
}

#[test]
fn raw_http_contract_401_413_415_and_health() {
    let server = ApiServer::start();
    let (body, code) = curl(&server, &["URL/api/v1/namespaces"]);
    assert_eq!(code, "401");
    let status: serde_json::Value = serde_json::from_str(&body).expect("status json");
    assert_eq!(
        (
            status["kind"].as_str(),
            status["reason"].as_str(),
            status["code"].as_i64()
        ),
        (Some("Status"), Some("Unauthorized"), Some(401))
    );
    let (body, code) = curl(&server, &["URL/healthz"]);
    assert_eq!((body.as_str(), code.as_str()), ("ok", "200"));

    let config = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig");
    let token = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("token")
        .to_string();
    let auth = format!("Authorization: Bearer {token}");
    let big = server.file(
        "big.json",
        &format!(
            "{{\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"x\":\"{}\"}}}}",
            "a".repeat(3 * 1024 * 1024 + 10)
        ),
    );
    let (body, code) = curl(
        &server,
        &[
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{big}"),
            "URL/api/v1/namespaces/default/configmaps",
        ],
    );
    assert_eq!(code, "413", "{body}");
    let (body, code) = curl(
        &server,
        &[
            "-H",
            &auth,
            "-X",
            "PATCH",
            "-H",
            "Content-Type: text/plain",
            "-d",
            "{}",
            "URL/api/v1/namespaces/default/configmaps/x",
        ],
    );
    assert_eq!(code, "415", "{body}");
    assert!(body.contains("UnsupportedMediaType"), "{body}");
    let (body, code) = curl(&server, &["-H", &auth, "URL/metrics"]);
    assert_eq!(code, "200");
    assert!(
        body.contains("apiserver_request_total{code=\"401\""),
        "{body}"
    );
    assert!(
        body.contains("apiserver_request_duration_seconds_bucket"),
        "{body}"
    );
    let (_, code) = curl(&server, &["-H", &auth, "URL/readyz"]);
    assert_eq!(code, "200");
    let _ = eventually(1, || Some(()));
}

fn status(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[test]
fn raw_http_bodies_that_are_not_objects_are_bad_requests() {
    let server = ApiServer::start();
    let auth = auth(&server);
    let post = |content_type: &str, body: &str| {
        curl(
            &server,
            &[
                "-H",
                &auth,
                "-H",
                &format!("Content-Type: {content_type}"),
                "--data-binary",
                body,
                "URL/api/v1/namespaces/default/configmaps",
            ],
        )
    };
    let (body, code) = post("application/json", "{\"metadata\": {\"name\": \"x\"}");
    assert_eq!(code, "400", "{body}");
    let s = status(&body);
    assert_eq!(s["reason"], "BadRequest");
    assert_eq!(
        s["message"],
        "the object provided is unrecognized (must be of type ConfigMap): couldn't get version/kind; json parse error: unexpected end of JSON input ({\"metadata\": {\"name\": \"x\"})"
    );
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n data: y\n";
    let (body, code) = post("application/yaml", yaml);
    assert_eq!(code, "400", "{body}");
    assert_eq!(
        status(&body)["message"],
        "the object provided is unrecognized (must be of type ConfigMap): yaml: line 4: did not find expected key (61706956657273696f6e3a2076310a6b696e643a20436f6e6669674d6170 ...)"
    );
    // The body that is well formed gets through.
    let (body, code) = post(
        "application/yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  y: z\n",
    );
    assert_eq!(code, "201", "{body}");

    // So does a create carrying a resourceVersion, to be refused by storage.
    let (body, code) = post(
        "application/json",
        "{\"metadata\": {\"name\": \"rv\", \"resourceVersion\": \"7\"}}",
    );
    assert_eq!(code, "500", "{body}");
    let s = status(&body);
    assert_eq!(
        (s["message"].as_str(), s.get("reason")),
        (
            Some("resourceVersion should not be set on objects to be created"),
            None
        )
    );
}

#[test]
fn raw_http_discovery_health_collections_and_bookmarks() {
    let server = ApiServer::start();
    let auth = auth(&server);
    let (body, code) = curl(&server, &["URL/livez"]);
    assert_eq!((body.as_str(), code.as_str()), ("ok", "200"));

    let (body, code) = curl(&server, &["-H", &auth, "URL/api"]);
    assert_eq!(code, "200");
    let versions = status(&body);
    assert_eq!(versions["kind"], "APIVersions");
    assert_eq!(versions["versions"], serde_json::json!(["v1"]));
    let address = versions["serverAddressByClientCIDRs"][0]["serverAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let config = std::fs::read_to_string(&server.kubeconfig).expect("kubeconfig");
    assert!(
        config.contains(&format!("server: https://{address}")),
        "{address} is where the kubeconfig points"
    );
    let (body, _) = curl(&server, &["-H", &auth, "URL/apis"]);
    let groups = status(&body);
    assert_eq!(groups["kind"], "APIGroupList");
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(names, ["apps", "discovery.k8s.io", "networking.k8s.io"]);
    let (body, _) = curl(&server, &["-H", &auth, "URL/apis/apps/v1"]);
    let list = status(&body);
    assert_eq!(list["kind"], "APIResourceList");
    let resources: Vec<&str> = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        resources,
        [
            "deployments",
            "deployments/status",
            "deployments/scale",
            "replicasets",
            "replicasets/status",
            "replicasets/scale"
        ]
    );

    let cm = |name: &str, tier: &str| {
        format!("{{\"metadata\": {{\"name\": \"{name}\", \"labels\": {{\"tier\": \"{tier}\"}}}}}}")
    };
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "web")] {
        let (body, code) = curl(
            &server,
            &[
                "-H",
                &auth,
                "-H",
                "Content-Type: application/json",
                "-d",
                &cm(name, tier),
                "URL/api/v1/namespaces/default/configmaps",
            ],
        );
        assert_eq!(code, "201", "{body}");
    }
    let (body, code) = curl(
        &server,
        &[
            "-H",
            &auth,
            "-X",
            "DELETE",
            "URL/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dweb",
        ],
    );
    assert_eq!(code, "200", "{body}");
    let deleted = status(&body);
    assert_eq!(deleted["kind"], "ConfigMapList");
    let (body, _) = curl(
        &server,
        &["-H", &auth, "URL/api/v1/namespaces/default/configmaps"],
    );
    let left: Vec<String> = status(&body)["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(left, ["b"]);

    // A watch that allows bookmarks gets one before its timeout.
    let rv = status(&body)["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let (body, code) = curl(
        &server,
        &[
            "-H",
            &auth,
            &format!("URL/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=3"),
        ],
    );
    assert_eq!(code, "200");
    let event = status(body.lines().next().unwrap_or_default());
    assert_eq!(event["type"], "BOOKMARK", "{body}");
    assert_eq!(event["object"]["metadata"]["resourceVersion"], rv.as_str());
}
