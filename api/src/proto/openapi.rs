//! Encoding of a Swagger 2.0 JSON document as gnostic's `openapi.v2.Document` protobuf,
//! the form client-go's `OpenAPISchema()` asks `/openapi/v2` for. Field numbers follow
//! gnostic-models `openapiv2/OpenAPIv2.proto` (proto3).
//!
//! Values gnostic keeps as YAML (`default`, `example`, `enum`, vendor extensions) are
//! written as JSON text, which every YAML parser reads. Unknown keys are ignored, as
//! gnostic's own decoders ignore fields they do not know; a known key holding the wrong
//! JSON type is an error naming its place in the document.

use serde_json::{Map, Value};

use super::decode::MAX_DEPTH;
use super::wire::{Wire, Writer};
use super::ProtoError;

type Result<T = (), E = ProtoError> = std::result::Result<T, E>;

/// Encodes the document as `openapi.v2.Document`.
pub(super) fn document(doc: &Value) -> Result<Vec<u8>> {
    let d = Obj::new(doc, "document")?;
    let mut w = Writer::default();
    d.string(&mut w, 1, "swagger")?;
    d.message(&mut w, 2, "info", info)?;
    d.string(&mut w, 3, "host")?;
    d.string(&mut w, 4, "basePath")?;
    d.strings(&mut w, 5, "schemes")?;
    d.strings(&mut w, 6, "consumes")?;
    d.strings(&mut w, 7, "produces")?;
    d.message(&mut w, 8, "paths", paths)?;
    d.message(&mut w, 9, "definitions", |w, o| {
        o.named(w, 1, |w, v| schema(w, v, 0))
    })?;
    d.message(&mut w, 10, "parameters", |w, o| o.named(w, 1, parameter))?;
    d.message(&mut w, 11, "responses", |w, o| o.named(w, 1, response))?;
    d.list(&mut w, 12, "security", security_requirement)?;
    d.message(&mut w, 13, "securityDefinitions", |w, o| {
        o.named(w, 1, security_definition)
    })?;
    d.list(&mut w, 14, "tags", tag)?;
    d.message(&mut w, 15, "externalDocs", external_docs)?;
    d.extensions(&mut w, 16)?;
    Ok(w.into_bytes())
}

/// A JSON object being encoded, with its place in the document for errors.
#[derive(Clone, Copy)]
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

fn invalid(path: &str, expected: &str) -> ProtoError {
    ProtoError::OpenApi {
        path: path.to_owned(),
        expected: expected.to_owned(),
    }
}

impl<'a> Obj<'a> {
    fn new(value: &'a Value, path: &'a str) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Obj { map, path }),
            _ => Err(invalid(path, "an object")),
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(&self.path(key), "a string")),
        }
    }

    fn string(&self, w: &mut Writer, number: u32, key: &str) -> Result {
        w.string(number, self.str(key)?.unwrap_or_default());
        Ok(())
    }

    fn strings(&self, w: &mut Writer, number: u32, key: &str) -> Result {
        match self.get(key) {
            None => Ok(()),
            Some(Value::Array(items)) => items.iter().try_for_each(|item| match item {
                Value::String(s) => {
                    w.len_field(number, s.as_bytes());
                    Ok(())
                }
                _ => Err(invalid(&self.path(key), "an array of strings")),
            }),
            Some(_) => Err(invalid(&self.path(key), "an array of strings")),
        }
    }

    fn bool(&self, w: &mut Writer, number: u32, key: &str) -> Result {
        match self.get(key) {
            None => Ok(()),
            Some(Value::Bool(b)) => {
                w.bool(number, *b);
                Ok(())
            }
            Some(_) => Err(invalid(&self.path(key), "a boolean")),
        }
    }

    fn int(&self, w: &mut Writer, number: u32, key: &str) -> Result {
        let Some(value) = self.get(key) else {
            return Ok(());
        };
        let int = value.as_i64().or_else(|| {
            value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        });
        w.int64(
            number,
            int.ok_or_else(|| invalid(&self.path(key), "an integer"))?,
        );
        Ok(())
    }

    fn double(&self, w: &mut Writer, number: u32, key: &str) -> Result {
        let Some(value) = self.get(key) else {
            return Ok(());
        };
        w.double(
            number,
            value
                .as_f64()
                .ok_or_else(|| invalid(&self.path(key), "a number"))?,
        );
        Ok(())
    }

    /// A value gnostic keeps as `Any { yaml }`.
    fn any(&self, w: &mut Writer, number: u32, key: &str) -> Result {
        match self.get(key) {
            Some(value) => w.message(number, |w| any(w, value)),
            None => Ok(()),
        }
    }

    fn anys(&self, w: &mut Writer, number: u32, key: &str) -> Result {
        match self.get(key) {
            None => Ok(()),
            Some(Value::Array(items)) => items
                .iter()
                .try_for_each(|item| w.message(number, |w| any(w, item))),
            Some(_) => Err(invalid(&self.path(key), "an array")),
        }
    }

    /// The `x-` keys, as repeated `NamedAny`.
    fn extensions(&self, w: &mut Writer, number: u32) -> Result {
        for (name, value) in self.map.iter().filter(|(k, _)| k.starts_with("x-")) {
            named_any(w, number, name, value)?;
        }
        Ok(())
    }

    /// The object under `key` encoded by `encode` as a sub-message.
    fn message(
        &self,
        w: &mut Writer,
        number: u32,
        key: &str,
        encode: impl FnOnce(&mut Writer, Obj) -> Result,
    ) -> Result {
        let Some(value) = self.get(key) else {
            return Ok(());
        };
        let path = self.path(key);
        let obj = Obj::new(value, &path)?;
        w.message(number, |w| encode(w, obj))
    }

    /// The array under `key`, each object encoded by `encode` as one repeated sub-message.
    fn list(
        &self,
        w: &mut Writer,
        number: u32,
        key: &str,
        encode: impl Fn(&mut Writer, Obj) -> Result,
    ) -> Result {
        match self.get(key) {
            None => Ok(()),
            Some(Value::Array(items)) => items.iter().enumerate().try_for_each(|(i, item)| {
                let path = format!("{}[{i}]", self.path(key));
                let obj = Obj::new(item, &path)?;
                w.message(number, |w| encode(w, obj))
            }),
            Some(_) => Err(invalid(&self.path(key), "an array")),
        }
    }

    /// Every entry as a repeated `Named*` message: `name` = 1, `value` = 2.
    fn named(
        &self,
        w: &mut Writer,
        number: u32,
        encode: impl Fn(&mut Writer, Obj) -> Result,
    ) -> Result {
        for (name, value) in self.map {
            named_entry(w, number, self, name, value, &encode)?;
        }
        Ok(())
    }
}

fn named_entry(
    w: &mut Writer,
    number: u32,
    parent: &Obj,
    name: &str,
    value: &Value,
    encode: &impl Fn(&mut Writer, Obj) -> Result,
) -> Result {
    let path = parent.path(name);
    let obj = Obj::new(value, &path)?;
    w.message(number, |w| {
        w.string(1, name);
        w.message(2, |w| encode(w, obj))
    })
}

/// `Any { yaml = 2 }` holding the value as JSON text.
fn any(w: &mut Writer, value: &Value) -> Result {
    let mut text = value.to_string();
    text.push('\n');
    w.string(2, &text);
    Ok(())
}

fn named_any(w: &mut Writer, number: u32, name: &str, value: &Value) -> Result {
    w.message(number, |w| {
        w.string(1, name);
        w.message(2, |w| any(w, value))
    })
}

fn info(w: &mut Writer, o: Obj) -> Result {
    o.string(w, 1, "title")?;
    o.string(w, 2, "version")?;
    o.string(w, 3, "description")?;
    o.string(w, 4, "termsOfService")?;
    o.message(w, 5, "contact", |w, c| {
        c.string(w, 1, "name")?;
        c.string(w, 2, "url")?;
        c.string(w, 3, "email")?;
        c.extensions(w, 4)
    })?;
    o.message(w, 6, "license", |w, l| {
        l.string(w, 1, "name")?;
        l.string(w, 2, "url")?;
        l.extensions(w, 3)
    })?;
    o.extensions(w, 7)
}

fn external_docs(w: &mut Writer, o: Obj) -> Result {
    o.string(w, 1, "description")?;
    o.string(w, 2, "url")?;
    o.extensions(w, 3)
}

fn tag(w: &mut Writer, o: Obj) -> Result {
    o.string(w, 1, "name")?;
    o.string(w, 2, "description")?;
    o.message(w, 3, "externalDocs", external_docs)?;
    o.extensions(w, 4)
}

/// `Paths`: `x-` keys are vendor extensions (1), the others `NamedPathItem`s (2).
fn paths(w: &mut Writer, o: Obj) -> Result {
    o.extensions(w, 1)?;
    for (name, value) in o.map.iter().filter(|(k, _)| !k.starts_with("x-")) {
        named_entry(w, 2, &o, name, value, &path_item)?;
    }
    Ok(())
}

fn path_item(w: &mut Writer, o: Obj) -> Result {
    o.string(w, 1, "$ref")?;
    for (number, method) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        o.message(w, number, method, operation)?;
    }
    o.list(w, 9, "parameters", parameters_item)?;
    o.extensions(w, 10)
}

fn operation(w: &mut Writer, o: Obj) -> Result {
    o.strings(w, 1, "tags")?;
    o.string(w, 2, "summary")?;
    o.string(w, 3, "description")?;
    o.message(w, 4, "externalDocs", external_docs)?;
    o.string(w, 5, "operationId")?;
    o.strings(w, 6, "produces")?;
    o.strings(w, 7, "consumes")?;
    o.list(w, 8, "parameters", parameters_item)?;
    o.message(w, 9, "responses", responses)?;
    o.strings(w, 10, "schemes")?;
    o.bool(w, 11, "deprecated")?;
    o.list(w, 12, "security", security_requirement)?;
    o.extensions(w, 13)
}

/// `ParametersItem`: a `$ref` (2) or a parameter (1).
fn parameters_item(w: &mut Writer, o: Obj) -> Result {
    if o.get("$ref").is_some() {
        w.message(2, |w| json_reference(w, o))
    } else {
        w.message(1, |w| parameter(w, o))
    }
}

fn json_reference(w: &mut Writer, o: Obj) -> Result {
    o.string(w, 1, "$ref")?;
    o.string(w, 2, "description")
}

/// `Parameter`: a body parameter (1) or a `NonBodyParameter` (2) chosen by `in`.
fn parameter(w: &mut Writer, o: Obj) -> Result {
    let location = o.str("in")?.unwrap_or_default();
    let (variant, allow_empty) = match location {
        "body" => {
            return w.message(1, |w| {
                o.string(w, 1, "description")?;
                o.string(w, 2, "name")?;
                o.string(w, 3, "in")?;
                o.bool(w, 4, "required")?;
                o.message(w, 5, "schema", |w, s| schema(w, s, 0))?;
                o.extensions(w, 6)
            });
        }
        "header" => (1, false),
        "formData" => (2, true),
        "query" => (3, true),
        "path" => (4, false),
        _ => {
            return Err(invalid(
                &o.path("in"),
                "one of body, header, formData, query, path",
            ))
        }
    };
    w.message(2, |w| {
        w.message(variant, |w| {
            o.bool(w, 1, "required")?;
            o.string(w, 2, "in")?;
            o.string(w, 3, "description")?;
            o.string(w, 4, "name")?;
            let first = if allow_empty {
                o.bool(w, 5, "allowEmptyValue")?;
                6
            } else {
                5
            };
            primitives(w, o, first, 0)?;
            o.extensions(w, first + 17)
        })
    })
}

/// The 17 validation keywords every non-body parameter, header and `items` shares, in
/// the same order, numbered from `first`.
fn primitives(w: &mut Writer, o: Obj, first: u32, depth: usize) -> Result {
    if depth > MAX_DEPTH {
        return Err(invalid(o.path, "items nested less deeply"));
    }
    o.string(w, first, "type")?;
    o.string(w, first + 1, "format")?;
    o.message(w, first + 2, "items", |w, items| {
        primitives(w, items, 1, depth + 1)?;
        items.extensions(w, 18)
    })?;
    o.string(w, first + 3, "collectionFormat")?;
    o.any(w, first + 4, "default")?;
    o.double(w, first + 5, "maximum")?;
    o.bool(w, first + 6, "exclusiveMaximum")?;
    o.double(w, first + 7, "minimum")?;
    o.bool(w, first + 8, "exclusiveMinimum")?;
    o.int(w, first + 9, "maxLength")?;
    o.int(w, first + 10, "minLength")?;
    o.string(w, first + 11, "pattern")?;
    o.int(w, first + 12, "maxItems")?;
    o.int(w, first + 13, "minItems")?;
    o.bool(w, first + 14, "uniqueItems")?;
    o.anys(w, first + 15, "enum")?;
    o.double(w, first + 16, "multipleOf")
}

/// `Responses`: status codes as `NamedResponseValue`s (1), `x-` keys as extensions (2).
fn responses(w: &mut Writer, o: Obj) -> Result {
    for (code, value) in o.map.iter().filter(|(k, _)| !k.starts_with("x-")) {
        named_entry(w, 1, &o, code, value, &|w: &mut Writer, r: Obj| {
            if r.get("$ref").is_some() {
                w.message(2, |w| json_reference(w, r))
            } else {
                w.message(1, |w| response(w, r))
            }
        })?;
    }
    o.extensions(w, 2)
}

fn response(w: &mut Writer, o: Obj) -> Result {
    o.string(w, 1, "description")?;
    o.message(w, 2, "schema", |w, s| {
        if s.str("type")? == Some("file") {
            w.message(2, |w| file_schema(w, s))
        } else {
            w.message(1, |w| schema(w, s, 0))
        }
    })?;
    o.message(w, 3, "headers", |w, h| {
        h.named(w, 1, |w, header| {
            primitives(w, header, 1, 0)?;
            header.string(w, 18, "description")?;
            header.extensions(w, 19)
        })
    })?;
    o.message(w, 4, "examples", |w, e| {
        e.map
            .iter()
            .try_for_each(|(mime, example)| named_any(w, 1, mime, example))
    })?;
    o.extensions(w, 5)
}

fn file_schema(w: &mut Writer, o: Obj) -> Result {
    o.string(w, 1, "format")?;
    o.string(w, 2, "title")?;
    o.string(w, 3, "description")?;
    o.any(w, 4, "default")?;
    o.strings(w, 5, "required")?;
    o.string(w, 6, "type")?;
    o.bool(w, 7, "readOnly")?;
    o.message(w, 8, "externalDocs", external_docs)?;
    o.any(w, 9, "example")?;
    o.extensions(w, 10)
}

fn schema(w: &mut Writer, o: Obj, depth: usize) -> Result {
    if depth > MAX_DEPTH {
        return Err(invalid(o.path, "a schema nested less deeply"));
    }
    let nested = |w: &mut Writer, s: Obj| schema(w, s, depth + 1);
    o.string(w, 1, "$ref")?;
    o.string(w, 2, "format")?;
    o.string(w, 3, "title")?;
    o.string(w, 4, "description")?;
    o.any(w, 5, "default")?;
    o.double(w, 6, "multipleOf")?;
    o.double(w, 7, "maximum")?;
    o.bool(w, 8, "exclusiveMaximum")?;
    o.double(w, 9, "minimum")?;
    o.bool(w, 10, "exclusiveMinimum")?;
    o.int(w, 11, "maxLength")?;
    o.int(w, 12, "minLength")?;
    o.string(w, 13, "pattern")?;
    o.int(w, 14, "maxItems")?;
    o.int(w, 15, "minItems")?;
    o.bool(w, 16, "uniqueItems")?;
    o.int(w, 17, "maxProperties")?;
    o.int(w, 18, "minProperties")?;
    o.strings(w, 19, "required")?;
    o.anys(w, 20, "enum")?;
    match o.get("additionalProperties") {
        None => {}
        // A oneof member is written even when false.
        Some(Value::Bool(b)) => w.message(21, |w| {
            w.key(2, Wire::Varint);
            w.varint(u64::from(*b));
            Ok(())
        })?,
        Some(_) => o.message(w, 21, "additionalProperties", |w, s| {
            w.message(1, |w| nested(w, s))
        })?,
    }
    match o.get("type") {
        None => {}
        Some(Value::String(_)) => w.message(22, |w| o.string(w, 1, "type"))?,
        Some(_) => w.message(22, |w| o.strings(w, 1, "type"))?,
    }
    match o.get("items") {
        None => {}
        Some(Value::Array(_)) => w.message(23, |w| o.list(w, 1, "items", nested))?,
        Some(_) => o.message(w, 23, "items", |w, s| w.message(1, |w| nested(w, s)))?,
    }
    o.list(w, 24, "allOf", nested)?;
    o.message(w, 25, "properties", |w, p| p.named(w, 1, nested))?;
    o.string(w, 26, "discriminator")?;
    o.bool(w, 27, "readOnly")?;
    o.message(w, 28, "xml", |w, x| {
        x.string(w, 1, "name")?;
        x.string(w, 2, "namespace")?;
        x.string(w, 3, "prefix")?;
        x.bool(w, 4, "attribute")?;
        x.bool(w, 5, "wrapped")?;
        x.extensions(w, 6)
    })?;
    o.message(w, 29, "externalDocs", external_docs)?;
    o.any(w, 30, "example")?;
    o.extensions(w, 31)
}

/// `SecurityRequirement`: each scheme name with its scopes as a `NamedStringArray`.
fn security_requirement(w: &mut Writer, o: Obj) -> Result {
    for (name, _) in o.map {
        w.message(1, |w| {
            w.string(1, name);
            w.message(2, |w| o.strings(w, 1, name))
        })?;
    }
    Ok(())
}

/// `SecurityDefinitionsItem`, the variant chosen by `type` and, for OAuth2, `flow`.
fn security_definition(w: &mut Writer, o: Obj) -> Result {
    let scopes = |w: &mut Writer, number: u32| {
        o.message(w, number, "scopes", |w, s| {
            for (name, _) in s.map {
                w.message(1, |w| {
                    w.string(1, name);
                    s.string(w, 2, name)
                })?;
            }
            Ok(())
        })
    };
    let kind = o.str("type")?.unwrap_or_default();
    let flow = o.str("flow")?.unwrap_or_default();
    match (kind, flow) {
        ("basic", _) => w.message(1, |w| {
            o.string(w, 1, "type")?;
            o.string(w, 2, "description")?;
            o.extensions(w, 3)
        }),
        ("apiKey", _) => w.message(2, |w| {
            o.string(w, 1, "type")?;
            o.string(w, 2, "name")?;
            o.string(w, 3, "in")?;
            o.string(w, 4, "description")?;
            o.extensions(w, 5)
        }),
        ("oauth2", "implicit" | "password" | "application") => {
            let (variant, url) = match flow {
                "implicit" => (3, "authorizationUrl"),
                "password" => (4, "tokenUrl"),
                _ => (5, "tokenUrl"),
            };
            w.message(variant, |w| {
                o.string(w, 1, "type")?;
                o.string(w, 2, "flow")?;
                scopes(w, 3)?;
                o.string(w, 4, url)?;
                o.string(w, 5, "description")?;
                o.extensions(w, 6)
            })
        }
        ("oauth2", "accessCode") => w.message(6, |w| {
            o.string(w, 1, "type")?;
            o.string(w, 2, "flow")?;
            scopes(w, 3)?;
            o.string(w, 4, "authorizationUrl")?;
            o.string(w, 5, "tokenUrl")?;
            o.string(w, 6, "description")?;
            o.extensions(w, 7)
        }),
        _ => Err(invalid(
            o.path,
            "a security scheme of type basic, apiKey or oauth2 (with a known flow)",
        )),
    }
}
