//! Helpers over objects as JSON: metadata access, the typed decode check that makes
//! the server refuse what the real one refuses, and strict field validation.

use k8s_openapi::api::{apps, core, discovery, networking};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::resources::Resource;

pub fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).and_then(|m| m.get(field)).and_then(Value::as_str)
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or_default()
}

pub fn namespace(obj: &Value) -> Option<&str> {
    meta_str(obj, "namespace")
}

pub fn labels(obj: &Value) -> Map<String, Value> {
    meta(obj)
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Everything but `metadata` and `status`: what `generation` counts changes of.
pub fn spec_part(obj: &Value) -> Map<String, Value> {
    obj.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn check<T: DeserializeOwned + serde::Serialize>(obj: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Decodes `obj` as the resource's typed object. On success returns the fields the
/// type does not know, as dotted paths (`spec.replicass`); on failure the decode error.
pub fn decode(res: &Resource, obj: &Value) -> Result<Vec<String>, String> {
    let typed = match res.kind {
        "ConfigMap" => check::<core::v1::ConfigMap>(obj),
        "Endpoints" => check::<core::v1::Endpoints>(obj),
        "Event" => check::<core::v1::Event>(obj),
        "Namespace" => check::<core::v1::Namespace>(obj),
        "Node" => check::<core::v1::Node>(obj),
        "Pod" => check::<core::v1::Pod>(obj),
        "Secret" => check::<core::v1::Secret>(obj),
        "Service" => check::<core::v1::Service>(obj),
        "Deployment" => check::<apps::v1::Deployment>(obj),
        "ReplicaSet" => check::<apps::v1::ReplicaSet>(obj),
        "EndpointSlice" => check::<discovery::v1::EndpointSlice>(obj),
        "Ingress" => check::<networking::v1::Ingress>(obj),
        "IngressClass" => check::<networking::v1::IngressClass>(obj),
        "NetworkPolicy" => check::<networking::v1::NetworkPolicy>(obj),
        other => return Err(format!("no type for kind {other}")),
    }?;
    let mut unknown = Vec::new();
    unknown_fields(obj, &typed, "", &mut unknown);
    Ok(unknown)
}

/// Keys present in `input` but dropped by a typed round trip are unknown fields.
fn unknown_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(t) => unknown_fields(v, t, &here, out),
                    None if v.is_null() => {}
                    None => out.push(here),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, t)) in a.iter().zip(b).enumerate() {
                unknown_fields(v, t, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `kind`/`apiVersion` as stored and served.
pub fn stamp_type(res: &Resource, obj: &mut Value) {
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), Value::String(res.api_version()));
        map.insert("kind".into(), Value::String(res.kind.to_string()));
    }
}

/// A Kubernetes protobuf body (as client-go's typed clients send) as JSON.
pub fn from_protobuf(body: &[u8]) -> Result<Value, String> {
    api::proto::decode_object(body).map_err(|e| e.to_string())
}
