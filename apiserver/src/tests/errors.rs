//! Requests the apiserver refuses, with its status and words: bodies it cannot read,
//! a create that carries a resourceVersion, JSON patches that do not apply; and the
//! legacy discovery documents and health endpoints clients read.

use http::StatusCode;
use serde_json::{json, Value};

use super::{call, configmap, create, get, send, state};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

async fn post_raw(
    state: &crate::SharedState,
    content_type: &str,
    body: &str,
) -> (StatusCode, Value) {
    let (code, _, bytes) = send(
        state,
        "POST",
        CMS,
        body.as_bytes().to_vec(),
        &[("content-type", content_type)],
    )
    .await;
    (code, serde_json::from_slice(&bytes).expect("a Status"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_is_not_an_object_is_a_bad_request_naming_the_parser_error() {
    let (_dir, state) = state().await;
    let cases = [
        (
            "application/json",
            "{\"metadata\": {\"name\": \"x\"},}",
            "the object provided is unrecognized (must be of type ConfigMap): couldn't get version/kind; json parse error: invalid character '}' looking for beginning of object key string ({\"metadata\": {\"name\": \"x\"},})",
        ),
        (
            "application/json",
            "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {",
            "the object provided is unrecognized (must be of type ConfigMap): couldn't get version/kind; json parse error: unexpected end of JSON input ({\"apiVersion\": \"v1\", \"kind\": \" ...)",
        ),
        (
            "application/json",
            "[1]",
            "the object provided is unrecognized (must be of type ConfigMap): couldn't get version/kind; json parse error: json: cannot unmarshal array into Go value of type struct { APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" } (5b315d)",
        ),
        (
            "application/yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n   c: d\n",
            "the object provided is unrecognized (must be of type ConfigMap): yaml: line 7: mapping values are not allowed in this context (61706956657273696f6e3a2076310a6b696e643a20436f6e6669674d6170 ...)",
        ),
        (
            "application/yaml",
            "metadata:\n\tname: x\n",
            "the object provided is unrecognized (must be of type ConfigMap): yaml: line 2: found character that cannot start any token (6d657461646174613a0a096e616d653a20780a)",
        ),
    ];
    for (content_type, body, message) in cases {
        let (code, status) = post_raw(&state, content_type, body).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {status}");
        assert_eq!(status["reason"], "BadRequest");
        assert_eq!(status["message"], message, "{body}");
    }
    // A well-formed YAML object is created.
    let (code, created) = post_raw(
        &state,
        "application/yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: b\n",
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_carrying_a_resource_version_is_refused_by_storage() {
    let (_dir, state) = state().await;
    let mut cm = configmap("rv", "x", json!({}));
    cm["metadata"]["resourceVersion"] = json!("12");
    let json = [("content-type", "application/json")];
    let (code, _, status) = call(&state, "POST", CMS, Some(cm.clone()), &json).await;
    assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR, "{status}");
    assert_eq!(
        status,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "resourceVersion should not be set on objects to be created",
            "code": 500,
        }),
        "no reason, as for any error the apiserver does not classify"
    );
    let (code, _, _) = get(&state, &format!("{CMS}/rv")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // A dry run never reaches storage; "0" and what is not a number are dropped.
    let (code, _, dry) = call(
        &state,
        "POST",
        &format!("{CMS}?dryRun=All"),
        Some(cm.clone()),
        &json,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{dry}");
    for given in ["0", "-1"] {
        cm["metadata"]["resourceVersion"] = json!(given);
        cm["metadata"]["name"] = json!(format!("rv{given}"));
        let created = create(&state, CMS, cm.clone()).await;
        assert_ne!(created["metadata"]["resourceVersion"], json!(given));
    }
    // Server-side apply creating an object drops it too.
    let apply = [("content-type", "application/apply-patch+yaml")];
    let mut applied = configmap("applied", "x", json!({}));
    applied["metadata"]["resourceVersion"] = json!("12");
    let (code, _, created) = call(
        &state,
        "PATCH",
        &format!("{CMS}/applied?fieldManager=test"),
        Some(applied),
        &apply,
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_patches_apply_or_fail_with_the_apiserver_status() {
    let (_dir, state) = state().await;
    create(&state, CMS, configmap("p", "1", json!({"app": "x"}))).await;
    let uri = format!("{CMS}/p");
    let json_patch = [("content-type", "application/json-patch+json")];
    let ops = json!([
        {"op": "test", "path": "/data/v", "value": "1"},
        {"op": "replace", "path": "/data/v", "value": "2"},
        {"op": "add", "path": "/metadata/labels/tier", "value": "web"},
    ]);
    let (code, _, patched) = call(&state, "PATCH", &uri, Some(ops), &json_patch).await;
    assert_eq!(code, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"]["v"], "2");
    assert_eq!(
        patched["metadata"]["labels"],
        json!({"app": "x", "tier": "web"})
    );

    let failing = json!([
        {"op": "test", "path": "/data/v", "value": "1"},
        {"op": "replace", "path": "/data/v", "value": "3"},
    ]);
    let (code, _, status) = call(&state, "PATCH", &uri, Some(failing), &json_patch).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        status,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server rejected our request due to an error in our request",
            "reason": "Invalid", "details": {}, "code": 422,
        })
    );
    let (_, _, unchanged) = get(&state, &uri).await;
    assert_eq!(unchanged["data"]["v"], "2");

    let (code, _, status) = call(
        &state,
        "PATCH",
        &uri,
        Some(json!({"op": "add"})),
        &json_patch,
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        status["message"],
        "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
    );
    for (content_type, message) in [
        (
            "application/json-patch+json",
            "error decoding patch: invalid character ']' looking for beginning of value",
        ),
        (
            "application/merge-patch+json",
            "error decoding patch: invalid character ']' looking for beginning of value",
        ),
        (
            "application/strategic-merge-patch+json",
            "invalid character ']' looking for beginning of value",
        ),
    ] {
        let (code, _, bytes) = send(
            &state,
            "PATCH",
            &uri,
            b"[1,]".to_vec(),
            &[("content-type", content_type)],
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{content_type}");
        let status: Value = serde_json::from_slice(&bytes).expect("status");
        assert_eq!(status["message"], message, "{content_type}");
    }
    let (code, _, bytes) = send(
        &state,
        "PATCH",
        &format!("{uri}?fieldManager=test"),
        b"metadata:\n\tname: p\n".to_vec(),
        &[("content-type", "application/apply-patch+yaml")],
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let status: Value = serde_json::from_slice(&bytes).expect("status");
    assert_eq!(
        status["message"],
        "error decoding patch: error converting YAML to JSON: yaml: line 2: found character that cannot start any token"
    );
    let (code, _, bytes) = send(
        &state,
        "PATCH",
        &format!("{uri}?fieldManager=test"),
        b"- a\n".to_vec(),
        &[("content-type", "application/apply-patch+yaml")],
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let status: Value = serde_json::from_slice(&bytes).expect("status");
    assert_eq!(
        status["message"],
        "error decoding patch: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal array into Go value of type map[string]interface {}"
    );
    // A patch whose result is not an object is refused, not half applied.
    let root = json!([{"op": "replace", "path": "", "value": [1]}]);
    let (code, _, status) = call(&state, "PATCH", &uri, Some(root), &json_patch).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        status["message"],
        " \"\" is invalid: patch: Invalid value: \"[1]\": couldn't get version/kind; json parse error: json: cannot unmarshal array into Go value of type struct { APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }"
    );
    assert_eq!(status["details"]["causes"][0]["field"], "patch");
    let metadata = json!([{"op": "replace", "path": "/metadata", "value": 5}]);
    let (code, _, _) = call(&state, "PATCH", &uri, Some(metadata), &json_patch).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, _, unchanged) = get(&state, &uri).await;
    assert_eq!(unchanged["metadata"]["name"], "p");
    let many: Vec<Value> = vec![json!({"op": "test", "path": "/data/v", "value": "2"}); 10_001];
    let (code, _, status) =
        call(&state, "PATCH", &uri, Some(Value::Array(many)), &json_patch).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        status["message"],
        "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn legacy_discovery_lists_versions_groups_and_resources() {
    let (_dir, state) = state().await;
    let (code, _, versions) = get(&state, "/api").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        versions,
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
        })
    );
    let (_, _, groups) = get(&state, "/apis").await;
    assert_eq!(
        (&groups["kind"], &groups["apiVersion"]),
        (&json!("APIGroupList"), &json!("v1"))
    );
    let apps = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == "apps")
        .expect("apps");
    let v1 = json!({"groupVersion": "apps/v1", "version": "v1"});
    assert_eq!(
        apps,
        &json!({"name": "apps", "versions": [v1], "preferredVersion": v1})
    );
    let (_, _, group) = get(&state, "/apis/apps").await;
    assert_eq!(group["kind"], "APIGroup");
    assert_eq!(group["preferredVersion"], v1);

    let (_, _, list) = get(&state, "/apis/apps/v1").await;
    assert_eq!(
        (&list["kind"], &list["groupVersion"]),
        (&json!("APIResourceList"), &json!("apps/v1"))
    );
    let entry = |name: &str| {
        list["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {list}"))
    };
    assert_eq!(
        entry("deployments"),
        json!({
            "name": "deployments", "singularName": "deployment", "namespaced": true,
            "kind": "Deployment",
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": ["deploy"], "categories": ["all"],
        })
    );
    assert_eq!(
        entry("deployments/scale"),
        json!({
            "name": "deployments/scale", "singularName": "", "namespaced": true,
            "group": "autoscaling", "version": "v1", "kind": "Scale",
            "verbs": ["get", "patch", "update"],
        })
    );
    assert_eq!(entry("deployments/status")["kind"], "Deployment");
    let (_, _, core) = get(&state, "/api/v1").await;
    assert_eq!(core["groupVersion"], "v1");
    let namespaces = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "namespaces")
        .expect("namespaces");
    assert_eq!(namespaces["namespaced"], false);
    let (code, _, _) = get(&state, "/apis/apps/v2").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_endpoints_answer_without_a_token() {
    let (_dir, state) = state().await;
    for path in ["/livez", "/readyz", "/healthz"] {
        let req = http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let response = tower::ServiceExt::oneshot(crate::app(state.clone()), req)
            .await
            .expect("response");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"ok", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_objects_of_a_group_are_named_with_it() {
    let (_dir, state) = state().await;
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "other"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    });
    let json = [("content-type", "application/json")];
    let uri = "/apis/apps/v1/namespaces/default/deployments";
    let (code, _, status) = call(&state, "POST", uri, Some(deploy), &json).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        status["message"].as_str().is_some_and(|m| m.starts_with(
            "Deployment.apps \"web\" is invalid: spec.template.metadata.labels: Invalid value: "
        )),
        "{status}"
    );
    assert_eq!(
        (&status["details"]["group"], &status["details"]["kind"]),
        (&json!("apps"), &json!("Deployment"))
    );
}
