//! Discovery: `/version`, `/api`, `/apis` and per group-version resource lists, in
//! both the legacy form and the aggregated form (apidiscovery.k8s.io v2 and v2beta1)
//! that kubectl asks for first.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::resources::{self, Resource, GROUPS};
use crate::SharedState;

/// The Kubernetes version whose API this server follows.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";

pub async fn version() -> axum::Json<Value> {
    axum::Json(json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0+kubesim-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    }))
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Which aggregated discovery version the client accepts, if any.
fn aggregated(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())?;
    accept
        .split(',')
        .filter(|part| {
            part.contains("as=APIGroupDiscoveryList") && part.contains("g=apidiscovery.k8s.io")
        })
        .find_map(|part| {
            if part.contains("v=v2beta1") {
                Some("v2beta1")
            } else if part.contains("v=v2") {
                Some("v2")
            } else {
                None
            }
        })
}

fn aggregated_response(version: &str, items: Vec<Value>) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    let content_type =
        format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    (
        [(http::header::CONTENT_TYPE, content_type)],
        body.to_string(),
    )
        .into_response()
}

fn subresource_kind(res: &Resource, sub: &str) -> (Value, &'static [&'static str]) {
    let own = json!({"group": res.group, "version": res.version, "kind": res.kind});
    match sub {
        "scale" => (
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}),
            &["get", "patch", "update"],
        ),
        "binding" => (
            json!({"group": "", "version": "v1", "kind": "Binding"}),
            &["create"],
        ),
        "finalize" => (own, &["update"]),
        _ => (own, &["get", "patch", "update"]),
    }
}

fn aggregated_group(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = resources::of_group_version(group, version)
        .map(|r| {
            let subresources: Vec<Value> = r
                .subresources
                .iter()
                .map(|sub| {
                    let (kind, verbs) = subresource_kind(r, sub);
                    json!({"subresource": sub, "responseKind": kind, "verbs": verbs})
                })
                .collect();
            let mut entry = json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": resources::verbs(),
            });
            if !r.short_names.is_empty() {
                entry["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                entry["categories"] = json!(r.categories);
            }
            if !subresources.is_empty() {
                entry["subresources"] = Value::Array(subresources);
            }
            entry
        })
        .collect();
    let mut metadata = json!({"creationTimestamp": null});
    if !group.is_empty() {
        metadata["name"] = json!(group);
    }
    json!({
        "metadata": metadata,
        "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
    })
}

pub async fn core_versions(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if let Some(v) = aggregated(&headers) {
        return aggregated_response(v, vec![aggregated_group("", "v1")]);
    }
    axum::Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.server_address}],
    }))
    .into_response()
}

fn group_entry(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

pub async fn groups(headers: HeaderMap) -> Response {
    if let Some(v) = aggregated(&headers) {
        let items = GROUPS.iter().map(|(g, v)| aggregated_group(g, v)).collect();
        return aggregated_response(v, items);
    }
    let groups: Vec<Value> = GROUPS.iter().map(|(g, v)| group_entry(g, v)).collect();
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        .into_response()
}

pub async fn group(Path(group): Path<String>) -> Response {
    match GROUPS.iter().find(|(g, _)| *g == group) {
        Some((g, v)) => {
            let mut entry = group_entry(g, v);
            entry["kind"] = json!("APIGroup");
            entry["apiVersion"] = json!("v1");
            axum::Json(entry).into_response()
        }
        None => ApiError::not_found_path().into_response(),
    }
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for r in resources::of_group_version(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": resources::verbs(),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        for sub in r.subresources {
            let (kind, verbs) = subresource_kind(r, sub);
            let mut entry = json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind["kind"],
                "verbs": verbs,
            });
            if kind["group"] != json!(r.group) {
                entry["group"] = kind["group"].clone();
                entry["version"] = kind["version"].clone();
            }
            list.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list})
}

pub async fn core_resources(State(_): State<SharedState>) -> axum::Json<Value> {
    axum::Json(resource_list("", "v1"))
}

pub async fn group_resources(Path((group, version)): Path<(String, String)>) -> Response {
    if group.is_empty() || !resources::serves_group_version(&group, &version) {
        return ApiError::not_found_path().into_response();
    }
    axum::Json(resource_list(&group, &version)).into_response()
}
