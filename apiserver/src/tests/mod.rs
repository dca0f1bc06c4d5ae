//! In-process tests of the whole HTTP API through `app(state)`, one module per area;
//! the helpers here start a server state on a temporary directory and call it.

mod delete;
mod errors;
mod paging;
mod watch;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::*;

pub(crate) async fn state() -> (tempfile::TempDir, SharedState) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let state = AppState::open(&config, "secret".into(), 6443)
        .await
        .expect("open");
    (dir, state)
}

/// Sends `body` as it is and returns the status, headers and raw body.
pub(crate) async fn send(
    state: &SharedState,
    method: &str,
    uri: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", "Bearer secret");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let response = app(state.clone())
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, bytes.to_vec())
}

/// Sends `body` as JSON (if any) and returns the response body as JSON, or as a JSON
/// string when it is not JSON.
pub(crate) async fn call(
    state: &SharedState,
    method: &str,
    uri: &str,
    body: Option<Value>,
    extra: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Value) {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let (code, headers, bytes) = send(state, method, uri, body, extra).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (code, headers, value)
}

/// Creates `object` by POST to `uri`, failing the test unless it is created.
pub(crate) async fn create(state: &SharedState, uri: &str, object: Value) -> Value {
    let json = [("content-type", "application/json")];
    let (code, _, created) = call(state, "POST", uri, Some(object), &json).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    created
}

/// A ConfigMap named `name` with `data.v` and `labels`.
pub(crate) fn configmap(name: &str, v: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"v": v},
    })
}

/// The names of a list's items.
pub(crate) fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .map(str::to_string)
        .collect()
}

pub(crate) async fn get(state: &SharedState, uri: &str) -> (StatusCode, http::HeaderMap, Value) {
    call(state, "GET", uri, None, &[]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_the_token_get_a_401_status() {
    let (_dir, state) = state().await;
    let req = Request::get("/api/v1/namespaces")
        .body(Body::empty())
        .expect("request");
    let response = app(state).oneshot(req).await.expect("response");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_makes_default_namespaces_and_the_kubernetes_service() {
    let (_dir, state) = state().await;
    let (code, _, list) = get(&state, "/api/v1/namespaces").await;
    assert_eq!(code, StatusCode::OK);
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let (_, _, svc) = get(&state, "/api/v1/namespaces/default/services/kubernetes").await;
    assert_eq!(
        (
            svc["spec"]["clusterIP"].as_str(),
            svc["spec"]["ports"][0]["port"].as_i64()
        ),
        (Some("10.96.0.1"), Some(443))
    );
    let (code, _, _) = get(&state, "/api/v1/namespaces/default/endpoints/kubernetes").await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "a loopback address is not published as an endpoint"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_advertised_address_is_published_as_the_kubernetes_endpoints() {
    let dir = tempfile::tempdir().expect("temp dir");
    let advertise = IpAddr::from([192, 168, 1, 1]);
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        advertise_address: Some(advertise),
        ..Config::default()
    };
    let state = AppState::open(&config, "secret".into(), 6443)
        .await
        .expect("open");
    let (_, _, ep) = get(&state, "/api/v1/namespaces/default/endpoints/kubernetes").await;
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "192.168.1.1");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 6443);
    let (_, _, slice) = get(
        &state,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
    )
    .await;
    assert_eq!(slice["endpoints"][0]["addresses"][0], "192.168.1.1");
    // Restarting on another port moves them, and the Service's targetPort, along.
    drop(state);
    let state = AppState::open(&config, "secret".into(), 7443)
        .await
        .expect("reopen");
    let (_, _, ep) = get(&state, "/api/v1/namespaces/default/endpoints/kubernetes").await;
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 7443);
    let (_, _, svc) = get(&state, "/api/v1/namespaces/default/services/kubernetes").await;
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 7443);
}

/// The specs kept between Service creates are used only while nothing else was
/// committed: a deleted Service's port is free again, a held one stays taken.
#[tokio::test(flavor = "multi_thread")]
async fn node_ports_follow_creates_and_deletes_across_kept_specs() {
    let (_dir, state) = state().await;
    let service = |name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80, "nodePort": 30001}]},
        })
    };
    let json = [("content-type", "application/json")];
    let uri = "/api/v1/namespaces/default/services";
    let create = |name: &'static str| call(&state, "POST", uri, Some(service(name)), &json);
    assert_eq!(create("a").await.0, StatusCode::CREATED);
    let (code, _, status) = create("b").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(status["message"]
        .as_str()
        .unwrap_or_default()
        .contains("provided port is already allocated"));
    let (code, _, _) = call(&state, "DELETE", &format!("{uri}/a"), None, &[]).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(create("b").await.0, StatusCode::CREATED);
    let (code, _, _) = create("c").await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, _, b) = get(&state, &format!("{uri}/b")).await;
    let (_, _, list) = get(&state, uri).await;
    let ips: Vec<&str> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["spec"]["clusterIP"].as_str())
        .collect();
    let unique: std::collections::BTreeSet<&&str> = ips.iter().collect();
    assert_eq!(ips.len(), unique.len(), "cluster IPs are unique: {ips:?}");
    assert!(b["spec"]["clusterIP"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_service_is_refused_whole_with_its_causes() {
    let (_dir, state) = state().await;
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "np"},
        "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80, "nodePort": 58080}]},
    });
    let (code, _, status) = call(
        &state,
        "POST",
        "/api/v1/namespaces/default/services",
        Some(svc),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.ports[0].nodePort"
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueInvalid"
    );
    let (code, _, _) = get(&state, "/api/v1/namespaces/default/services/np").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_store_string_data_as_data_and_check_their_type() {
    let (_dir, state) = state().await;
    let json = [("content-type", "application/json")];
    let uri = "/api/v1/namespaces/default/secrets";
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds"},
        "data": {"user": "YWRtaW4="},
        "stringData": {"password": "s3cr3t"},
    });
    let (code, _, created) = call(&state, "POST", uri, Some(secret), &json).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["data"],
        json!({"password": "czNjcjN0", "user": "YWRtaW4="})
    );
    assert_eq!(created["type"], "Opaque");
    assert!(created.get("stringData").is_none(), "{created}");
    let merge = [("content-type", "application/merge-patch+json")];
    let patch = json!({"stringData": {"user": "root"}});
    let (code, _, patched) = call(
        &state,
        "PATCH",
        &format!("{uri}/creds"),
        Some(patch),
        &merge,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"]["user"], "cm9vdA==");
    assert!(patched.get("stringData").is_none(), "{patched}");
    let (_, _, stored) = get(&state, &format!("{uri}/creds")).await;
    assert_eq!(stored["data"], patched["data"]);
    assert!(stored.get("stringData").is_none(), "{stored}");

    let retype = json!({"type": "kubernetes.io/basic-auth"});
    let (code, _, status) = call(
        &state,
        "PATCH",
        &format!("{uri}/creds"),
        Some(retype),
        &merge,
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        status["message"],
        "Secret \"creds\" is invalid: type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"
    );

    let tls = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "web-tls"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": "Y2VydA=="},
    });
    let (code, _, status) = call(&state, "POST", uri, Some(tls), &json).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        status["message"],
        "Secret \"web-tls\" is invalid: data[tls.key]: Required value"
    );
    assert_eq!(status["details"]["causes"][0]["field"], "data[tls.key]");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueRequired"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_answers_in_the_aggregated_form_when_asked() {
    let (_dir, state) = state().await;
    let accept =
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
    let (code, headers, list) = call(&state, "GET", "/apis", None, &[("accept", accept)]).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        headers["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let apps = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|g| g["metadata"]["name"] == "apps")
        .expect("apps group");
    let deploy = apps["versions"][0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["resource"] == "deployments")
        .expect("deployments");
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    assert_eq!(deploy["categories"], json!(["all"]));
    let (_, _, core) = call(&state, "GET", "/api", None, &[("accept", accept)]).await;
    let secrets = core["items"][0]["versions"][0]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["resource"] == "secrets")
        .expect("secrets");
    assert_eq!(
        (&secrets["scope"], &secrets["singularResource"]),
        (&json!("Namespaced"), &json!("secret"))
    );
    assert!(secrets.get("shortNames").is_none(), "{secrets}");
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_v3_tells_kubectl_the_server_validates_fields() {
    let (_dir, state) = state().await;
    let (_, _, doc) = get(&state, "/openapi/v3/apis/apps/v1").await;
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "version": "v1", "kind": "Deployment"})
    );
    assert!(patch["parameters"]
        .as_array()
        .expect("params")
        .iter()
        .any(|p| p["name"] == "fieldValidation"));
    assert!(patch["requestBody"]["content"]
        .get("application/strategic-merge-patch+json")
        .is_some());
    let secret = json!({"group": "", "version": "v1", "kind": "Secret"});
    let (_, _, core) = get(&state, "/openapi/v3/api/v1").await;
    let post = &core["paths"]["/api/v1/namespaces/{namespace}/secrets"]["post"];
    assert_eq!(post["x-kubernetes-group-version-kind"], secret);
    let (_, _, v2) = get(&state, "/openapi/v2").await;
    let put = &v2["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["put"];
    assert_eq!(put["x-kubernetes-group-version-kind"], secret);
}

#[tokio::test(flavor = "multi_thread")]
async fn ingresses_without_a_class_get_the_default_ingress_class() {
    let (_dir, state) = state().await;
    let json = [("content-type", "application/json")];
    let classes = "/apis/networking.k8s.io/v1/ingressclasses";
    for (name, default) in [("old", true), ("other", false), ("nginx", true)] {
        let mut class = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": name},
            "spec": {"controller": "k8s.io/ingress-nginx"},
        });
        if default {
            class["metadata"]["annotations"] =
                json!({"ingressclass.kubernetes.io/is-default-class": "true"});
        }
        let (code, _, body) = call(&state, "POST", classes, Some(class), &json).await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
        if name == "old" {
            // Creation timestamps have seconds: "nginx" is created later.
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
    }
    let uri = "/apis/networking.k8s.io/v1/namespaces/default/ingresses";
    let ingress = |name: &str, class: Option<&str>, annotations: Value| {
        let mut ing = json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}},
        });
        if let Some(class) = class {
            ing["spec"]["ingressClassName"] = json!(class);
        }
        ing
    };
    let (code, _, plain) = call(
        &state,
        "POST",
        uri,
        Some(ingress("plain", None, json!({}))),
        &json,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{plain}");
    assert_eq!(
        plain["spec"]["ingressClassName"], "nginx",
        "the newest default"
    );
    let named = ingress("named", Some("other"), json!({}));
    let (_, _, named) = call(&state, "POST", uri, Some(named), &json).await;
    assert_eq!(named["spec"]["ingressClassName"], "other");
    let annotated = ingress(
        "annotated",
        None,
        json!({"kubernetes.io/ingress.class": "traefik"}),
    );
    let (_, _, annotated) = call(&state, "POST", uri, Some(annotated), &json).await;
    assert!(
        annotated["spec"].get("ingressClassName").is_none(),
        "{annotated}"
    );
}
