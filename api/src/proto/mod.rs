//! Kubernetes protobuf, both directions the apiserver needs: request bodies that kubectl's
//! typed clients send as `application/vnd.kubernetes.protobuf` are decoded into the JSON
//! the real apiserver would see after decoding them, and the Swagger 2.0 document is
//! encoded as gnostic's `openapi.v2.Document` for clients that fetch `/openapi/v2` as
//! protobuf.
//!
//! Object decoding is driven by a schema table (`kinds.rs`) generated from the Kubernetes
//! API definitions by `tools/gen-proto-schema.py`; it covers the served kinds and every
//! message reachable from them. Not here: encoding objects as protobuf (responses stay
//! JSON), CBOR, and kinds outside the table.

mod decode;
mod kinds;
mod openapi;
mod schema;
mod wire;

use serde_json::{Map, Value};

use wire::{Reader, Wire};

/// The four bytes before every Kubernetes protobuf envelope.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf body or an OpenAPI document could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("empty data")]
    EmptyData,
    #[error(
        "provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]"
    )]
    MissingMagic,
    #[error("empty body")]
    EmptyBody,
    #[error("content encoding {0:?} is not supported")]
    ContentEncoding(String),
    #[error("Object 'Kind' is missing in the protobuf envelope")]
    MissingKind,
    #[error("no kind {kind:?} is registered for version {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("{message}: unexpected end of data")]
    Truncated { message: &'static str },
    #[error("{message}: varint longer than 64 bits")]
    VarintOverflow { message: &'static str },
    #[error("{message}: invalid field number {number}")]
    FieldNumber { message: &'static str, number: u64 },
    #[error("{message}: unsupported wire type {wire}")]
    InvalidWireType { message: &'static str, wire: u8 },
    #[error("{message}: field {field} has wire type {wire}, expected {expected}")]
    WrongWireType {
        message: &'static str,
        field: u32,
        wire: u8,
        expected: u8,
    },
    #[error("{message}: messages nested more than {} deep", decode::MAX_DEPTH)]
    TooDeep { message: &'static str },
    #[error("{message}: {seconds} seconds since the epoch is outside years 0 to 9999")]
    TimeOutOfRange { message: &'static str, seconds: i64 },
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    EmptyQuantity,
    #[error("impossible IntOrString.Type {0}")]
    IntOrStringType(i64),
    #[error("FieldsV1: embedded document is not JSON: {0}")]
    FieldsV1(String),
    #[error("openapi document: {path} must be {expected}")]
    OpenApi { path: String, expected: String },
}

/// Decodes a Kubernetes protobuf request body (`k8s\0` followed by a `runtime.Unknown`
/// envelope whose `raw` holds the object) into the object's JSON, as the real apiserver
/// would write it after decoding: `kind` and `apiVersion` from the envelope, then the
/// fields in Go order with Go's `omitempty` rules.
pub fn decode_object(body: &[u8]) -> Result<Value, ProtoError> {
    let envelope = Envelope::parse(body)?;
    if !envelope.content_encoding.is_empty() {
        return Err(ProtoError::ContentEncoding(envelope.content_encoding));
    }
    if envelope.kind.is_empty() {
        return Err(ProtoError::MissingKind);
    }
    let root = kinds::ROOTS
        .iter()
        .find(|r| r.api_version == envelope.api_version && r.kind == envelope.kind)
        .ok_or_else(|| ProtoError::UnknownKind {
            api_version: envelope.api_version.clone(),
            kind: envelope.kind.clone(),
        })?;
    let mut out = Map::new();
    out.insert("kind".to_owned(), Value::String(envelope.kind));
    out.insert("apiVersion".to_owned(), Value::String(envelope.api_version));
    decode::message(root.message, envelope.raw, 0, &mut out)?;
    Ok(Value::Object(out))
}

/// Encodes an OpenAPI v2 (Swagger 2.0) JSON document as gnostic's `openapi.v2.Document`
/// protobuf (gnostic-models `openapiv2/OpenAPIv2.proto`), which client-go's
/// `OpenAPISchema()` decodes.
pub fn encode_openapi_v2(doc: &Value) -> Result<Vec<u8>, ProtoError> {
    openapi::document(doc)
}

/// The `runtime.Unknown` envelope around every protobuf object.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

impl<'a> Envelope<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, ProtoError> {
        if body.is_empty() {
            return Err(ProtoError::EmptyData);
        }
        let data = body.strip_prefix(MAGIC).ok_or(ProtoError::MissingMagic)?;
        if data.is_empty() {
            return Err(ProtoError::EmptyBody);
        }
        let mut envelope = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
        };
        let mut r = Reader::new(data, "Unknown");
        while !r.is_empty() {
            let (number, wire) = r.key()?;
            if !matches!(number, 1..=3) {
                r.skip(wire)?;
                continue;
            }
            if wire != Wire::Len {
                return Err(r.wrong_wire_type(number, wire, Wire::Len));
            }
            let payload = r.bytes()?;
            match number {
                1 => envelope.type_meta(payload)?,
                2 => envelope.raw = payload,
                _ => envelope.content_encoding = String::from_utf8_lossy(payload).into_owned(),
            }
        }
        Ok(envelope)
    }

    /// `TypeMeta { apiVersion = 1, kind = 2 }`; a repeated message merges field by field.
    fn type_meta(&mut self, data: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(data, "TypeMeta");
        while !r.is_empty() {
            let (number, wire) = r.key()?;
            let target = match number {
                1 => &mut self.api_version,
                2 => &mut self.kind,
                _ => {
                    r.skip(wire)?;
                    continue;
                }
            };
            if wire != Wire::Len {
                return Err(r.wrong_wire_type(number, wire, Wire::Len));
            }
            *target = String::from_utf8_lossy(r.bytes()?).into_owned();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
