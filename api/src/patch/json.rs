//! JSON patch (RFC 6902), as the apiserver applies `application/json-patch+json`.
//!
//! The `json-patch` crate performs each mutation; before it, every operation is located
//! in the document the way the apiserver's library (evanphx/json-patch v4) does, so
//! that its quirks and its error texts are kept: negative array indices count from the
//! end, `replace` of a missing object key adds it, `test` of a missing key against
//! `null` passes, a missing `value` means `null`, and a failure reads e.g.
//! `testing value /spec/replicas failed: test failed`.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value};

use super::{PatchError, Result};

/// The most operations the apiserver accepts in one JSON patch.
const MAX_OPERATIONS: usize = 10_000;

/// Applies an RFC 6902 patch (a list of operations) to `doc`. A failing operation
/// leaves `doc` untouched and reports the apiserver's message.
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value> {
    let ops = decode(patch)?;
    if ops.len() > MAX_OPERATIONS {
        return Err(PatchError::JsonPatchTooLarge {
            max: MAX_OPERATIONS,
            got: ops.len(),
        });
    }
    let mut doc = doc.clone();
    for op in ops {
        apply_operation(&mut doc, op).map_err(PatchError::JsonPatchApply)?;
    }
    Ok(doc)
}

/// The operations of a patch body: a list of objects (`null` is an empty patch).
fn decode(patch: &Value) -> Result<Vec<&Map<String, Value>>> {
    let items: &[Value] = match patch {
        Value::Array(items) => items,
        Value::Null => &[],
        other => return Err(unmarshal_error(other, "jsonpatch.Patch")),
    };
    items
        .iter()
        .map(|item| match item {
            Value::Object(op) => Ok(op),
            other => Err(unmarshal_error(other, "jsonpatch.Operation")),
        })
        .collect()
}

fn unmarshal_error(value: &Value, go_type: &str) -> PatchError {
    let kind = match value {
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) | Value::Null => "object",
    };
    PatchError::Decode(format!(
        "json: cannot unmarshal {kind} into Go value of type {go_type}"
    ))
}

type OpResult = std::result::Result<(), String>;

fn apply_operation(doc: &mut Value, op: &Map<String, Value>) -> OpResult {
    let kind = op.get("op").and_then(Value::as_str).unwrap_or("unknown");
    let value = op.get("value").cloned().unwrap_or(Value::Null);
    match kind {
        "add" => {
            let path = path_field(
                op,
                "path",
                "add operation failed to decode path: missing value",
            )?;
            add(doc, path, value)
        }
        "remove" => {
            let path = path_field(
                op,
                "path",
                "remove operation failed to decode path: missing value",
            )?;
            remove(doc, path)
        }
        "replace" => {
            let path = path_field(op, "path", "replace operation failed to decode path: operation missing path field: missing value")?;
            replace(doc, path, value)
        }
        "move" => {
            let from = path_field(op, "from", "move operation failed to decode from: operation, missing from field: missing value")?;
            let path = path_field(
                op,
                "path",
                "move operation failed to decode path: operation missing path field: missing value",
            )?;
            mov(doc, from, path)
        }
        "copy" => {
            let from = path_field(op, "from", "copy operation failed to decode from: operation, missing from field: missing value")?;
            let path = path_field(
                op,
                "path",
                "copy operation failed to decode path: missing value",
            )?;
            copy(doc, from, path)
        }
        "test" => {
            let path = path_field(
                op,
                "path",
                "test operation failed to decode path: operation missing path field: missing value",
            )?;
            test(doc, path, op.get("value").filter(|v| !v.is_null()))
        }
        other => Err(format!("Unexpected kind: {other}")),
    }
}

fn path_field<'a>(
    op: &'a Map<String, Value>,
    name: &str,
    missing: &str,
) -> std::result::Result<&'a str, String> {
    match op.get(name) {
        Some(Value::String(path)) => Ok(path),
        _ => Err(missing.to_string()),
    }
}

/// Where an operation lands: the container holding the last token, reached through
/// tokens already resolved to plain object keys and non-negative indices.
struct Location {
    parent: Vec<String>,
    container: Container,
    key: String,
}

#[derive(Clone, Copy)]
enum Container {
    Object,
    Array(usize),
}

/// Resolves every token of `path` but the last; `None` when a step is missing or is not
/// a container (the library's "doc is missing path").
fn locate(doc: &Value, path: &str) -> Option<Location> {
    let tokens: Vec<String> = path.split('/').map(decode_token).collect();
    let (key, middle) = tokens.split_last()?;
    let steps = middle.get(1..).filter(|_| tokens.len() >= 2)?;
    let mut current = doc;
    let mut parent = Vec::with_capacity(steps.len());
    for step in steps {
        let (next, token) = match current {
            Value::Object(map) => (map.get(step)?, step.clone()),
            Value::Array(items) => {
                let index = resolve_index(step, items.len()).ok()?;
                (items.get(index)?, index.to_string())
            }
            _ => return None,
        };
        parent.push(token);
        current = next;
    }
    let container = match current {
        Value::Object(_) => Container::Object,
        Value::Array(items) => Container::Array(items.len()),
        _ => return None,
    };
    Some(Location {
        parent,
        container,
        key: key.clone(),
    })
}

fn decode_token(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// An index of an existing item: negative counts from the end.
fn resolve_index(token: &str, len: usize) -> std::result::Result<usize, String> {
    let index: i64 = token
        .parse()
        .map_err(|_| format!("strconv.Atoi: parsing {token:?}: invalid syntax"))?;
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let resolved = if index < 0 { index + len } else { index };
    if resolved < 0 || resolved >= len {
        return Err(invalid_index(index));
    }
    usize::try_from(resolved).map_err(|_| invalid_index(index))
}

fn invalid_index(index: i64) -> String {
    format!("Unable to access invalid index: {index}: invalid index referenced")
}

/// An insertion point in a list of `len` items: `-` appends, negative counts from the
/// end of the list grown by one.
fn insertion_index(token: &str, len: usize) -> std::result::Result<usize, String> {
    if token == "-" {
        return Ok(len);
    }
    let index: i64 = token.parse().map_err(|_| {
        format!("value was not a proper array index: '{token}': strconv.Atoi: parsing {token:?}: invalid syntax")
    })?;
    let grown = i64::try_from(len).unwrap_or(i64::MAX).saturating_add(1);
    let resolved = if index < 0 { index + grown } else { index };
    if resolved < 0 || resolved >= grown {
        return Err(invalid_index(index));
    }
    usize::try_from(resolved).map_err(|_| invalid_index(index))
}

fn pointer(parent: &[String], last: &str) -> PointerBuf {
    PointerBuf::from_tokens(parent.iter().map(String::as_str).chain([last]))
}

fn run(doc: &mut Value, op: PatchOperation) -> OpResult {
    json_patch::patch(doc, &[op]).map_err(|err| err.to_string())
}

fn add(doc: &mut Value, path: &str, value: Value) -> OpResult {
    let Some(at) = locate(doc, path) else {
        return Err(format!(
            "add operation does not apply: doc is missing path: {path:?}: missing value"
        ));
    };
    insert(doc, at, value).map_err(|err| format!("error in add for path: '{path}': {err}"))
}

/// Adds `value` at a located place: an object key is set, a list gets a new item.
fn insert(doc: &mut Value, at: Location, value: Value) -> OpResult {
    let key = match at.container {
        Container::Object => at.key,
        Container::Array(len) => insertion_index(&at.key, len)?.to_string(),
    };
    let path = pointer(&at.parent, &key);
    run(doc, PatchOperation::Add(AddOperation { path, value }))
}

fn remove(doc: &mut Value, path: &str) -> OpResult {
    let Some(at) = locate(doc, path) else {
        return Err(format!(
            "remove operation does not apply: doc is missing path: {path:?}: missing value"
        ));
    };
    let key = existing_key(doc, &at)
        .map_err(|err| format!("error in remove for path: '{path}': {err}"))?;
    let path = pointer(&at.parent, &key);
    run(doc, PatchOperation::Remove(RemoveOperation { path }))
}

/// The token of an item that must exist: a present object key or a valid index.
fn existing_key(doc: &Value, at: &Location) -> std::result::Result<String, String> {
    match at.container {
        Container::Array(len) => resolve_index(&at.key, len).map(|i| i.to_string()),
        Container::Object => {
            let target = doc.pointer(pointer(&at.parent, &at.key).as_str());
            match target {
                Some(_) => Ok(at.key.clone()),
                None => Err(format!(
                    "Unable to remove nonexistent key: {}: missing value",
                    at.key
                )),
            }
        }
    }
}

fn replace(doc: &mut Value, path: &str, value: Value) -> OpResult {
    if path.is_empty() {
        if !(value.is_object() || value.is_array()) {
            return Err("replace operation value must be object or array: %!w(<nil>)".to_string());
        }
        *doc = value;
        return Ok(());
    }
    let Some(at) = locate(doc, path) else {
        return Err(format!(
            "replace operation does not apply: doc is missing path: {path}: missing value"
        ));
    };
    match at.container {
        Container::Object => {
            let path = pointer(&at.parent, &at.key);
            run(doc, PatchOperation::Add(AddOperation { path, value }))
        }
        Container::Array(len) => {
            let index = resolve_index(&at.key, len).map_err(|_| {
                format!(
                    "replace operation does not apply: doc is missing key: {path}: missing value"
                )
            })?;
            let path = pointer(&at.parent, &index.to_string());
            run(
                doc,
                PatchOperation::Replace(ReplaceOperation { path, value }),
            )
        }
    }
}

fn mov(doc: &mut Value, from: &str, path: &str) -> OpResult {
    let Some(at) = locate(doc, from) else {
        return Err(format!(
            "move operation does not apply: doc is missing from path: {from}: missing value"
        ));
    };
    let key = existing_key(doc, &at)
        .map_err(|err| format!("error in move for path: '{}': {err}", at.key))?;
    let source = pointer(&at.parent, &key);
    let value = doc.pointer(source.as_str()).cloned().unwrap_or(Value::Null);
    run(
        doc,
        PatchOperation::Remove(RemoveOperation { path: source }),
    )?;
    let Some(to) = locate(doc, path) else {
        return Err(format!(
            "move operation does not apply: doc is missing destination path: {path}: missing value"
        ));
    };
    insert(doc, to, value).map_err(|err| format!("error in move for path: '{path}': {err}"))
}

fn copy(doc: &mut Value, from: &str, path: &str) -> OpResult {
    let Some(at) = locate(doc, from) else {
        return Err(format!(
            "copy operation does not apply: doc is missing from path: {from}: missing value"
        ));
    };
    let value = match at.container {
        Container::Object => doc.pointer(pointer(&at.parent, &at.key).as_str()).cloned(),
        Container::Array(len) => {
            let index = resolve_index(&at.key, len)
                .map_err(|err| format!("error in copy for from: '{from}': {err}"))?;
            doc.pointer(pointer(&at.parent, &index.to_string()).as_str())
                .cloned()
        }
    };
    let Some(to) = locate(doc, path) else {
        return Err(format!(
            "copy operation does not apply: doc is missing destination path: {path}: missing value"
        ));
    };
    insert(doc, to, value.unwrap_or(Value::Null))
        .map_err(|err| format!("error while adding value during copy: {err}"))
}

fn test(doc: &Value, path: &str, expected: Option<&Value>) -> OpResult {
    let failed = || Err(format!("testing value {path} failed: test failed"));
    if path.is_empty() {
        return if expected == Some(doc) {
            Ok(())
        } else {
            failed()
        };
    }
    let Some(at) = locate(doc, path) else {
        return Err(format!(
            "test operation does not apply: is missing path: {path}: missing value"
        ));
    };
    let actual = match at.container {
        Container::Object => doc.pointer(pointer(&at.parent, &at.key).as_str()),
        Container::Array(len) => {
            let index = resolve_index(&at.key, len)
                .map_err(|err| format!("error in test for path: '{path}': {err}"))?;
            doc.pointer(pointer(&at.parent, &index.to_string()).as_str())
        }
    };
    match (actual.filter(|v| !v.is_null()), expected) {
        (None, None) => Ok(()),
        (Some(actual), Some(expected)) if actual == expected => Ok(()),
        _ => failed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "ports": [{"port": 80}, {"port": 443}]}
        })
    }

    fn check(patch: Value, expected: std::result::Result<Value, &str>) {
        let got = json_patch(&doc(), &patch).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_string), "patch {patch}");
    }

    fn with(path: &str, value: Value) -> Value {
        let mut d = doc();
        if let Some(slot) = d.pointer_mut(path) {
            *slot = value;
        }
        d
    }

    #[test]
    fn add_inserts_keys_and_list_items() {
        check(
            json!([{"op": "add", "path": "/metadata/labels/tier", "value": "fe"}]),
            Ok(with(
                "/metadata/labels",
                json!({"app": "web", "tier": "fe"}),
            )),
        );
        check(
            json!([{"op": "add", "path": "/spec/ports/1", "value": {"port": 8080}}]),
            Ok(with(
                "/spec/ports",
                json!([{"port": 80}, {"port": 8080}, {"port": 443}]),
            )),
        );
        check(
            json!([{"op": "add", "path": "/spec/ports/-", "value": {"port": 8080}}]),
            Ok(with(
                "/spec/ports",
                json!([{"port": 80}, {"port": 443}, {"port": 8080}]),
            )),
        );
        check(
            json!([{"op": "add", "path": "/spec/ports/-1", "value": {"port": 8080}}]),
            Ok(with(
                "/spec/ports",
                json!([{"port": 80}, {"port": 443}, {"port": 8080}]),
            )),
        );
        check(
            json!([{"op": "add", "path": "/spec/paused"}]),
            Ok(with(
                "/spec",
                json!({"replicas": 1, "ports": [{"port": 80}, {"port": 443}], "paused": null}),
            )),
        );
    }

    #[test]
    fn add_failures() {
        check(
            json!([{"op": "add", "path": "/spec/template/spec", "value": {}}]),
            Err("add operation does not apply: doc is missing path: \"/spec/template/spec\": missing value"),
        );
        check(
            json!([{"op": "add", "path": "/spec/ports/5", "value": {}}]),
            Err("error in add for path: '/spec/ports/5': Unable to access invalid index: 5: invalid index referenced"),
        );
        check(
            json!([{"op": "add", "path": "/spec/ports/x", "value": {}}]),
            Err("error in add for path: '/spec/ports/x': value was not a proper array index: 'x': strconv.Atoi: parsing \"x\": invalid syntax"),
        );
    }

    #[test]
    fn remove_and_replace() {
        check(
            json!([{"op": "remove", "path": "/metadata/labels/app"}]),
            Ok(with("/metadata/labels", json!({}))),
        );
        check(
            json!([{"op": "remove", "path": "/spec/ports/-1"}]),
            Ok(with("/spec/ports", json!([{"port": 80}]))),
        );
        check(
            json!([{"op": "remove", "path": "/metadata/labels/tier"}]),
            Err("error in remove for path: '/metadata/labels/tier': Unable to remove nonexistent key: tier: missing value"),
        );
        check(
            json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
            Ok(with("/spec/replicas", json!(3))),
        );
        check(
            json!([{"op": "replace", "path": "/spec/ports/0/port", "value": 81}]),
            Ok(with("/spec/ports/0/port", json!(81))),
        );
        check(
            json!([{"op": "replace", "path": "/spec/ports/7", "value": 81}]),
            Err("replace operation does not apply: doc is missing key: /spec/ports/7: missing value"),
        );
    }

    #[test]
    fn replace_of_a_missing_object_key_adds_it_like_the_apiserver() {
        check(
            json!([{"op": "replace", "path": "/metadata/labels/tier", "value": "fe"}]),
            Ok(with(
                "/metadata/labels",
                json!({"app": "web", "tier": "fe"}),
            )),
        );
        check(
            json!([{"op": "replace", "path": "/status/phase", "value": "x"}]),
            Err("replace operation does not apply: doc is missing path: /status/phase: missing value"),
        );
    }

    #[test]
    fn move_and_copy() {
        check(
            json!([{"op": "move", "from": "/metadata/labels/app", "path": "/metadata/labels/name"}]),
            Ok(with("/metadata/labels", json!({"name": "web"}))),
        );
        check(
            json!([{"op": "copy", "from": "/spec/ports/0", "path": "/spec/ports/-"}]),
            Ok(with(
                "/spec/ports",
                json!([{"port": 80}, {"port": 443}, {"port": 80}]),
            )),
        );
        check(
            json!([{"op": "move", "from": "/metadata/labels/x", "path": "/metadata/labels/y"}]),
            Err("error in move for path: 'x': Unable to remove nonexistent key: x: missing value"),
        );
        check(
            json!([{"op": "move", "from": "/nope/a", "path": "/a"}]),
            Err("move operation does not apply: doc is missing from path: /nope/a: missing value"),
        );
        check(
            json!([{"op": "copy", "from": "/spec/replicas", "path": "/nope/a"}]),
            Err("copy operation does not apply: doc is missing destination path: /nope/a: missing value"),
        );
    }

    #[test]
    fn test_operation_guards_the_patch() {
        check(
            json!([
                {"op": "test", "path": "/spec/replicas", "value": 1},
                {"op": "replace", "path": "/spec/replicas", "value": 2}
            ]),
            Ok(with("/spec/replicas", json!(2))),
        );
        check(
            json!([
                {"op": "replace", "path": "/spec/replicas", "value": 2},
                {"op": "test", "path": "/spec/replicas", "value": 1}
            ]),
            Err("testing value /spec/replicas failed: test failed"),
        );
        check(
            json!([{"op": "test", "path": "/spec/paused", "value": null}]),
            Ok(doc()),
        );
        check(
            json!([{"op": "test", "path": "/spec/paused", "value": false}]),
            Err("testing value /spec/paused failed: test failed"),
        );
        check(
            json!([{"op": "test", "path": "", "value": doc()}]),
            Ok(doc()),
        );
    }

    #[test]
    fn malformed_patches() {
        check(
            json!([{"op": "frobnicate", "path": "/a"}]),
            Err("Unexpected kind: frobnicate"),
        );
        check(json!([{"path": "/a"}]), Err("Unexpected kind: unknown"));
        check(
            json!([{"op": "add", "value": 1}]),
            Err("add operation failed to decode path: missing value"),
        );
        check(
            json!({"op": "add"}),
            Err("json: cannot unmarshal object into Go value of type jsonpatch.Patch"),
        );
        check(
            json!(["add"]),
            Err("json: cannot unmarshal string into Go value of type jsonpatch.Operation"),
        );
        check(json!(null), Ok(doc()));
    }

    #[test]
    fn too_many_operations() {
        let ops =
            vec![json!({"op": "test", "path": "/spec/replicas", "value": 1}); MAX_OPERATIONS + 1];
        let err = json_patch(&doc(), &Value::Array(ops)).unwrap_err();
        assert_eq!(err.code(), 413);
        assert_eq!(
            err.to_string(),
            "The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
    }
}
