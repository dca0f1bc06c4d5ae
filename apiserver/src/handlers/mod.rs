//! The REST surface for objects: path parsing (`/api/v1/namespaces/{ns}/services/{name}/status`),
//! the query parameters of the real API, body decoding and response rendering
//! (plain objects or `Table`s), and dispatch to reads and writes.

pub mod node;
pub mod read;
pub mod write;

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, Uri};
use serde_json::{json, Value};

use crate::error::{ApiError, Result};
use crate::resources::{self, Resource};
use crate::SharedState;

/// Bodies above this are refused with 413, as the real apiserver does.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What a request path names.
#[derive(Debug, Clone)]
pub struct Target {
    pub res: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

/// Parses `/api/v1/...` or `/apis/{group}/{version}/...` after the group-version.
pub fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let owned = |s: &&str| s.to_string();
    match rest {
        ["namespaces", ns, plural, tail @ ..] if namespaced(group, version, plural) => {
            if tail.len() > 2 || ns.is_empty() {
                return None;
            }
            Some(Target {
                res: resources::by_plural(group, version, plural)?,
                namespace: Some(ns.to_string()),
                name: tail.first().map(owned),
                sub: tail.get(1).map(owned),
            })
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            let res = resources::by_plural(group, version, plural)?;
            if res.namespaced && !tail.is_empty() {
                return None;
            }
            Some(Target {
                res,
                namespace: None,
                name: tail.first().map(owned),
                sub: tail.get(1).map(owned),
            })
        }
        _ => None,
    }
}

fn namespaced(group: &str, version: &str, plural: &str) -> bool {
    resources::by_plural(group, version, plural).is_some_and(|r| r.namespaced)
}

/// The query string as a map; repeated keys keep the last value.
#[derive(Debug, Default, Clone)]
pub struct Params(HashMap<String, String>);

impl Params {
    fn parse(uri: &Uri) -> Params {
        let pairs = uri.query().map(|q| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode_component(k), decode_component(v))
                })
                .collect()
        });
        Params(pairs.unwrap_or_default())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

fn decode_component(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The verb and resource of a request, for metrics.
pub fn classify(method: &Method, uri: &Uri) -> (String, String) {
    let Some(target) = parse_path(uri.path()) else {
        return (method.as_str().to_uppercase(), String::new());
    };
    let params = Params::parse(uri);
    let verb = match (method, target.name.is_some()) {
        (&Method::GET, _) if params.flag("watch") => "WATCH",
        (&Method::GET, true) => "GET",
        (&Method::GET, false) => "LIST",
        (&Method::POST, _) => "POST",
        (&Method::PUT, _) => "PUT",
        (&Method::PATCH, _) => "PATCH",
        (&Method::DELETE, true) => "DELETE",
        (&Method::DELETE, false) => "DELETECOLLECTION",
        _ => "OTHER",
    };
    (verb.to_string(), target.res.plural.to_string())
}

/// The request as the handlers see it.
pub struct Call {
    pub state: SharedState,
    pub target: Target,
    pub params: Params,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Call {
    pub fn res(&self) -> &'static Resource {
        self.target.res
    }

    pub fn wants_table(&self) -> Option<&'static str> {
        let accept = self
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())?;
        accept.split(',').find_map(|part| {
            if !part.contains("as=Table") {
                None
            } else if part.contains("v=v1beta1") {
                Some("meta.k8s.io/v1beta1")
            } else {
                Some("meta.k8s.io/v1")
            }
        })
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim())
            .unwrap_or("application/json")
    }

    /// The field manager: `fieldManager`, else the user agent's program name.
    pub fn manager(&self) -> String {
        if let Some(m) = self.params.get("fieldManager") {
            return m.to_string();
        }
        let agent = self
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        agent.split('/').next().unwrap_or(agent).to_string()
    }

    /// The body as JSON (JSON or YAML accepted for objects). A body that is not one
    /// object is refused as the apiserver refuses it: unrecognized, with the JSON or
    /// YAML parser's message and the start of the body.
    pub fn body_object(&self) -> Result<Value> {
        let kind = self.res().kind;
        let what = format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}",
            self.res().version,
        );
        let unrecognized = |cause: String| {
            ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {kind}): {cause} ({})",
                api::body::summarize(&self.body, 30)
            ))
        };
        let first_look = |e| unrecognized(api::body::version_kind_error(e));
        let value: Value = match self.content_type() {
            "application/yaml" | "application/apply-patch+yaml" => {
                yaml_document(&self.body).map_err(unrecognized)?
            }
            "application/json" | "" | "*/*" => {
                if let Some(syntax) = api::body::json_syntax_error(&self.body) {
                    return Err(first_look(api::body::VersionKindError::Syntax(&syntax)));
                }
                serde_json::from_slice(&self.body)
                    .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))?
            }
            "application/vnd.kubernetes.protobuf" => crate::objects::from_protobuf(&self.body)
                .map_err(|e| ApiError::bad_request(format!("{what}: {e}")))?,
            other => return Err(ApiError::unsupported_media_type(other)),
        };
        if let Some(found) = api::body::json_value_kind(&value) {
            return Err(first_look(api::body::VersionKindError::NotAnObject(found)));
        }
        // `null` decodes as an empty object.
        Ok(if value.is_null() { json!({}) } else { value })
    }
}

/// The first YAML document of `body` as JSON, or the YAML parser's message.
pub(crate) fn yaml_document(body: &[u8]) -> std::result::Result<Value, String> {
    use serde::Deserialize;
    match serde_yaml::Deserializer::from_slice(body).next() {
        None => Ok(Value::Null),
        Some(doc) => Value::deserialize(doc).map_err(|e| yaml_message(&e)),
    }
}

/// The message the apiserver's YAML parser gives for the error `err` found: the
/// problem and a line counted as that parser counts it (see `api::body::yaml_message`).
fn yaml_message(err: &serde_yaml::Error) -> String {
    // The parser's fields are public only through the error's Debug form:
    // `Error { kind: SCANNER, problem: "…", problem_mark: Mark { line: 3, column: 5 }, … }`.
    let debug = format!("{err:?}");
    let Some(fields) = debug.strip_prefix("Error { kind: ") else {
        return format!("yaml: {err}");
    };
    let problem = fields.split_once("problem: \"").and_then(|(_, rest)| {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => out.push(chars.next()?),
                c => out.push(c),
            }
        }
        None
    });
    let Some(problem) = problem else {
        return format!("yaml: {err}");
    };
    let mark_line = |name: &str| {
        let rest = fields.split_once(&format!("{name}: Mark {{ line: "))?.1;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u64>().ok().map(|l| l.saturating_sub(1))
    };
    api::body::yaml_message(&api::body::YamlProblem {
        scanner: fields.starts_with("SCANNER"),
        problem,
        problem_line: mark_line("problem_mark").unwrap_or(0),
        context_line: mark_line("context_mark"),
    })
}

pub async fn dispatch(State(state): State<SharedState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Some(target) = parse_path(parts.uri.path()) else {
        return ApiError::not_found_path().into_response();
    };
    if target.res.kind == "Pod" && target.name.is_some() && target.sub.as_deref() == Some("exec") {
        let params = Params::parse(&parts.uri);
        return node::exec(state, target, params, Request::from_parts(parts, body))
            .await
            .unwrap_or_else(IntoResponse::into_response);
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return ApiError::too_large().into_response(),
    };
    let call = Call {
        state,
        target,
        params: Params::parse(&parts.uri),
        headers: parts.headers,
        body,
    };
    let result = route(call, &parts.method).await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn route(call: Call, method: &Method) -> Result<Response> {
    let t = &call.target;
    let has_name = t.name.is_some();
    let sub = t.sub.clone();
    if let Some(sub) = &sub {
        if !t.res.subresources.contains(&sub.as_str()) {
            return Err(ApiError::not_found_path());
        }
    }
    match (method.clone(), has_name, sub.as_deref()) {
        (Method::GET, false, None) if call.params.flag("watch") => crate::watch::watch(call).await,
        (Method::GET, false, None) => read::list(call).await,
        (Method::GET, true, None) if call.params.flag("watch") => crate::watch::watch(call).await,
        (Method::GET, true, None | Some("status")) => read::get(call).await,
        (Method::GET, true, Some("scale")) => write::get_scale(call).await,
        (Method::GET, true, Some("log")) => node::log(call).await,
        (Method::POST, false, None) => write::create(call).await,
        (Method::POST, true, Some("binding")) => write::bind(call).await,
        (Method::PUT, true, None | Some("status") | Some("finalize")) => write::update(call).await,
        (Method::PUT, true, Some("scale")) => write::update_scale(call).await,
        (Method::PATCH, true, None | Some("status")) => write::patch(call).await,
        (Method::PATCH, true, Some("scale")) => write::patch_scale(call).await,
        (Method::DELETE, true, None) => write::delete(call).await,
        (Method::DELETE, false, None) => write::delete_collection(call).await,
        (m, _, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {m}"
        ))),
    }
}

/// An object (or list) as JSON, or as a `Table` when the client asked for one.
pub fn respond(call: &Call, code: u16, object: Value) -> Response {
    let body = match call.wants_table() {
        Some(api_version) => {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!(""));
            let items: Vec<Value> = match object.get("items").and_then(Value::as_array) {
                Some(items) => items.clone(),
                None => vec![object.clone()],
            };
            let mut meta = json!({"resourceVersion": rv});
            if let Some(c) = object.pointer("/metadata/continue") {
                meta["continue"] = c.clone();
            }
            if let Some(c) = object.pointer("/metadata/remainingItemCount") {
                meta["remainingItemCount"] = c.clone();
            }
            table(call, api_version, &items, meta)
        }
        None => object,
    };
    json_response(code, &body)
}

pub fn json_response(code: u16, body: &Value) -> Response {
    let code = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::OK);
    (
        code,
        [(http::header::CONTENT_TYPE, "application/json")],
        Body::from(body.to_string()),
    )
        .into_response()
}

/// A `meta.k8s.io` Table of `items`, with the columns real kubectl prints.
pub fn table(call: &Call, api_version: &str, items: &[Value], metadata: Value) -> Value {
    let kind = call.res().kind;
    let now = chrono::Utc::now();
    let include = call.params.get("includeObject").unwrap_or("Metadata");
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let object = match include {
                "Object" => item.clone(),
                "None" => Value::Null,
                _ => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": item.get("metadata").cloned().unwrap_or(json!({})),
                }),
            };
            json!({"cells": api::table::cells(kind, item, now), "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": metadata,
        "columnDefinitions": api::table::column_definitions(kind),
        "rows": rows,
    })
}

/// `kind: Status, status: Success`, as returned by deletes.
pub fn success_status(res: &Resource, name: &str, uid: Option<&str>) -> Value {
    let mut details = json!({"name": name, "group": res.group, "kind": res.plural});
    if let Some(uid) = uid {
        details["uid"] = json!(uid);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_resources_namespaces_and_subresources() {
        let t = parse_path("/api/v1/namespaces/default/services/web/status").expect("parses");
        assert_eq!(
            (
                t.res.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("services", Some("default"), Some("web"), Some("status"))
        );
        let t = parse_path("/api/v1/namespaces/kube-system").expect("parses");
        assert_eq!(
            (t.res.plural, t.namespace, t.name.as_deref()),
            ("namespaces", None, Some("kube-system"))
        );
        let t = parse_path("/apis/apps/v1/deployments").expect("parses");
        assert_eq!(
            (t.res.kind, t.namespace, t.name),
            ("Deployment", None, None)
        );
        assert!(
            parse_path("/apis/apps/v1/deployments/x").is_none(),
            "namespaced item without namespace"
        );
        assert!(parse_path("/apis/networking.k8s.io/v1beta1/ingresses").is_none());
        let t = parse_path("/api/v1/namespaces/default/finalize");
        assert!(t.is_some_and(|t| t.sub.as_deref() == Some("finalize")));
    }

    #[test]
    fn yaml_errors_read_as_the_apiserver_parser_words_them() {
        let error = |body: &str| yaml_document(body.as_bytes()).err();
        assert_eq!(
            error(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: b\n   c: d\n"
            ),
            Some("yaml: line 7: mapping values are not allowed in this context".into())
        );
        assert_eq!(
            error("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n data: y\n"),
            Some("yaml: line 4: did not find expected key".into())
        );
        assert_eq!(
            error("metadata:\n\tname: x\n"),
            Some("yaml: line 2: found character that cannot start any token".into())
        );
        assert_eq!(
            error("a: b: c"),
            Some("yaml: mapping values are not allowed in this context".into())
        );
        assert_eq!(
            yaml_document(b"a: 1\n---\nb: [").ok(),
            Some(json!({"a": 1})),
            "only the first document is read"
        );
        assert_eq!(yaml_document(b"").ok(), Some(Value::Null));
    }

    #[test]
    fn query_components_are_decoded() {
        let uri: Uri = "/api/v1/pods?labelSelector=app%3Dnginx%2Ctier+in+(a)&watch=1"
            .parse()
            .expect("uri");
        let p = Params::parse(&uri);
        assert_eq!(p.get("labelSelector"), Some("app=nginx,tier in (a)"));
        assert!(p.flag("watch"));
    }
}
