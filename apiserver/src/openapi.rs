//! OpenAPI documents describing every path and operation with its
//! `x-kubernetes-group-version-kind` and query parameters: v3 (one document per
//! group-version) and v2 (one document, JSON or the protobuf kubectl 1.27 asks for).
//! kubectl reads them to learn that the server validates fields itself
//! (`fieldValidation`) and which patch types each resource accepts.
//!
//! The documents carry no object schemas: kubectl then computes strategic merge
//! patches from its own compiled-in types, which are the authoritative ones.

use std::hash::{Hash, Hasher};

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::{json, Map, Value};

use crate::discovery::{KUBE_MAJOR, KUBE_MINOR};
use crate::error::ApiError;
use crate::resources::{self, Resource, GROUPS};

const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];
/// What the real apiserver answers with (kubectl asks for the `@v1.0` form).
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// One HTTP operation on one path.
struct Operation {
    method: &'static str,
    action: &'static str,
    id: String,
    params: Vec<(&'static str, &'static str, &'static str)>,
    body: Body,
    gvk: Value,
}

#[derive(Clone, Copy, PartialEq)]
enum Body {
    None,
    Object,
    Patch,
}

fn group_versions() -> impl Iterator<Item = (&'static str, &'static str)> {
    std::iter::once(("", "v1")).chain(GROUPS.iter().copied())
}

fn doc_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

const WRITE_PARAMS: &[(&str, &str, &str)] = &[
    ("dryRun", "string", "When present, indicates that modifications should not be persisted."),
    ("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes."),
    ("fieldValidation", "string", "Ignore, Warn or Strict: how the server treats unknown or duplicate fields in the request body."),
];
const LIST_PARAMS: &[(&str, &str, &str)] = &[
    (
        "labelSelector",
        "string",
        "A selector to restrict the list of returned objects by their labels.",
    ),
    (
        "fieldSelector",
        "string",
        "A selector to restrict the list of returned objects by their fields.",
    ),
    (
        "limit",
        "integer",
        "limit is a maximum number of responses to return for a list call.",
    ),
    (
        "continue",
        "string",
        "The continue option should be set when retrieving more results from the server.",
    ),
    (
        "resourceVersion",
        "string",
        "resourceVersion sets a constraint on what resource versions a request may be served from.",
    ),
    (
        "watch",
        "boolean",
        "Watch for changes to the described resources.",
    ),
];

/// Every (path, operations) of one resource.
fn paths_for(res: &Resource) -> Vec<(String, Vec<Operation>)> {
    let base = format!("/{}", doc_path(res.group, res.version));
    let collection = if res.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", res.plural)
    } else {
        format!("{base}/{}", res.plural)
    };
    let item = format!("{collection}/{{name}}");
    let kind = res.kind;
    let own = json!({"group": res.group, "version": res.version, "kind": res.kind});
    let op = |method,
              action,
              id: String,
              params: &[(&'static str, &'static str, &'static str)],
              body,
              gvk: &Value| Operation {
        method,
        action,
        id,
        params: params.to_vec(),
        body,
        gvk: gvk.clone(),
    };
    let mut patch_params = WRITE_PARAMS.to_vec();
    patch_params.push((
        "force",
        "boolean",
        "Force is going to \"force\" Apply requests.",
    ));
    let mut out = vec![
        (
            collection,
            vec![
                op(
                    "get",
                    "list",
                    format!("list{kind}"),
                    LIST_PARAMS,
                    Body::None,
                    &own,
                ),
                op(
                    "post",
                    "post",
                    format!("create{kind}"),
                    WRITE_PARAMS,
                    Body::Object,
                    &own,
                ),
                op(
                    "delete",
                    "deletecollection",
                    format!("deleteCollection{kind}"),
                    &[],
                    Body::None,
                    &own,
                ),
            ],
        ),
        (
            item.clone(),
            vec![
                op("get", "get", format!("read{kind}"), &[], Body::None, &own),
                op(
                    "put",
                    "put",
                    format!("replace{kind}"),
                    WRITE_PARAMS,
                    Body::Object,
                    &own,
                ),
                op(
                    "patch",
                    "patch",
                    format!("patch{kind}"),
                    &patch_params,
                    Body::Patch,
                    &own,
                ),
                op(
                    "delete",
                    "delete",
                    format!("delete{kind}"),
                    &[],
                    Body::None,
                    &own,
                ),
            ],
        ),
    ];
    for sub in res
        .subresources
        .iter()
        .filter(|s| matches!(**s, "status" | "scale"))
    {
        let title = format!("{}{}", sub[..1].to_uppercase(), &sub[1..]);
        let gvk = if *sub == "scale" {
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        } else {
            own.clone()
        };
        out.push((
            format!("{item}/{sub}"),
            vec![
                op(
                    "get",
                    "get",
                    format!("read{kind}{title}"),
                    &[],
                    Body::None,
                    &gvk,
                ),
                op(
                    "put",
                    "put",
                    format!("replace{kind}{title}"),
                    WRITE_PARAMS,
                    Body::Object,
                    &gvk,
                ),
                op(
                    "patch",
                    "patch",
                    format!("patch{kind}{title}"),
                    &patch_params,
                    Body::Patch,
                    &gvk,
                ),
            ],
        ));
    }
    out
}

fn v3_operation(op: &Operation) -> Value {
    let params: Vec<Value> = op
        .params
        .iter()
        .map(|(name, kind, description)| {
            json!({"name": name, "in": "query", "description": description, "schema": {"type": kind, "uniqueItems": true}})
        })
        .collect();
    let mut out = json!({
        "operationId": op.id,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}},
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": op.gvk,
    });
    let types: &[&str] = match op.body {
        Body::None => &[],
        Body::Object => &["*/*"],
        Body::Patch => PATCH_TYPES,
    };
    if !types.is_empty() {
        let content: Map<String, Value> = types
            .iter()
            .map(|t| (t.to_string(), json!({"schema": {"type": "object"}})))
            .collect();
        out["requestBody"] = json!({"required": true, "content": content});
    }
    out
}

fn v2_operation(op: &Operation) -> Value {
    let mut params: Vec<Value> = op
        .params
        .iter()
        .map(|(name, kind, description)| json!({"name": name, "in": "query", "type": kind, "uniqueItems": true, "description": description}))
        .collect();
    if op.body != Body::None {
        params.push(
            json!({"name": "body", "in": "body", "required": true, "schema": {"type": "object"}}),
        );
    }
    let consumes: &[&str] = match op.body {
        Body::Patch => PATCH_TYPES,
        _ => &["*/*"],
    };
    json!({
        "operationId": op.id,
        "consumes": consumes,
        "produces": ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"],
        "schemes": ["https"],
        "parameters": params,
        "responses": {"200": {"description": "OK"}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": op.gvk,
    })
}

fn paths_of(
    resources: impl Iterator<Item = &'static Resource>,
    render: fn(&Operation) -> Value,
) -> Map<String, Value> {
    let mut paths = Map::new();
    for res in resources {
        for (path, ops) in paths_for(res) {
            let item: Map<String, Value> = ops
                .iter()
                .map(|op| (op.method.to_string(), render(op)))
                .collect();
            paths.insert(path, Value::Object(item));
        }
    }
    paths
}

fn info(title: &str) -> Value {
    json!({"title": title, "version": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0")})
}

fn v3_document(group: &str, version: &str) -> Value {
    let title = if group.is_empty() {
        "Kubernetes"
    } else {
        group
    };
    json!({
        "openapi": "3.0.0",
        "info": info(title),
        "paths": paths_of(resources::of_group_version(group, version), v3_operation),
        "components": {"schemas": {}},
    })
}

/// The Swagger 2.0 document of every served resource.
pub fn v2_document() -> Value {
    json!({
        "swagger": "2.0",
        "info": info("Kubernetes"),
        "paths": paths_of(resources::RESOURCES.iter(), v2_operation),
        "definitions": {},
    })
}

fn hash(doc: &Value) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    doc.to_string().hash(&mut h);
    format!("{:016X}", h.finish())
}

pub async fn index() -> axum::Json<Value> {
    let mut paths = Map::new();
    for (group, version) in group_versions() {
        let path = doc_path(group, version);
        let url = format!(
            "/openapi/v3/{path}?hash={}",
            hash(&v3_document(group, version))
        );
        paths.insert(path, json!({"serverRelativeURL": url}));
    }
    axum::Json(json!({"paths": paths}))
}

pub async fn group_version(Path(path): Path<String>) -> Response {
    match group_versions().find(|(g, v)| doc_path(g, v) == path) {
        Some((group, version)) => axum::Json(v3_document(group, version)).into_response(),
        None => ApiError::not_found_path().into_response(),
    }
}

/// `/openapi/v2`: protobuf when asked for (client-go's OpenAPISchema), JSON otherwise.
pub async fn v2(headers: HeaderMap) -> Response {
    let doc = v2_document();
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !accept.contains("protobuf") {
        return axum::Json(doc).into_response();
    }
    match api::proto::encode_openapi_v2(&doc) {
        Ok(bytes) => ([(http::header::CONTENT_TYPE, V2_PROTOBUF)], bytes).into_response(),
        Err(err) => ApiError::internal(err).into_response(),
    }
}
