//! Tests of the protobuf module, in four groups: bodies captured from real kubectl,
//! objects encoded by an independent encoder (k8s-pb, prost code generated from the same
//! .proto files), malformed input, and the OpenAPI v2 encoding decoded back with prost.

mod kubectl;
mod malformed;
mod objects;
mod openapi;

use serde_json::Value;

use super::{decode_object, MAGIC};

/// Compares as pretty-printed text, so that field order (Go's order) is checked too.
#[track_caller]
fn check(got: &Value, expected: &Value) {
    let got = serde_json::to_string_pretty(got).unwrap();
    let expected = serde_json::to_string_pretty(expected).unwrap();
    assert!(got == expected, "decoded:\n{got}\nexpected:\n{expected}");
}

/// A `k8s\0` + `runtime.Unknown` body around an encoded object.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    use prost::Message as _;
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut body = MAGIC.to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

#[track_caller]
fn decode(body: &[u8]) -> Value {
    decode_object(body).unwrap_or_else(|err| panic!("decode failed: {err}"))
}
