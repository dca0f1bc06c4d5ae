//! JSON merge patch (RFC 7386), as the apiserver applies `application/merge-patch+json`:
//! objects merge key by key, `null` deletes a key, anything else replaces the target.
//! Like the apiserver's library, nulls are pruned from the objects a patch inserts
//! (also inside inserted lists), and a patch that is neither an object nor a list is
//! rejected with `Invalid JSON Patch`.

use serde_json::{Map, Value};

use super::{PatchError, Result};

/// Applies a JSON merge patch to `doc`. An object patch merges into the document; a list
/// patch replaces it (the apiserver then fails to decode the result); `null` and scalars
/// are rejected.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value> {
    match patch {
        Value::Object(patch) => Ok(merge_value(Some(doc), patch)),
        Value::Array(_) => Ok(pruned(patch.clone())),
        _ => Err(PatchError::MergePatchInvalid),
    }
}

/// Merges an object patch into a target: into the target's keys when it is an object,
/// into an empty object otherwise.
fn merge_value(target: Option<&Value>, patch: &Map<String, Value>) -> Value {
    let Some(Value::Object(target)) = target else {
        return pruned(Value::Object(patch.clone()));
    };
    let mut out = target.clone();
    for (key, value) in patch {
        match value {
            Value::Null => {
                out.remove(key);
            }
            Value::Object(inner) => {
                let merged = merge_value(out.get(key).filter(|v| !v.is_null()), inner);
                out.insert(key.clone(), merged);
            }
            _ => {
                let current = out.get(key).filter(|v| !v.is_null());
                let replacement = if current.is_some_and(Value::is_object) {
                    value.clone()
                } else {
                    pruned(value.clone())
                };
                out.insert(key.clone(), replacement);
            }
        }
    }
    Value::Object(out)
}

/// Drops null members of objects, recursively through objects and lists.
fn pruned(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, pruned(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(pruned).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(doc: Value, patch: Value, expected: Value) {
        assert_eq!(
            merge_patch(&doc, &patch),
            Ok(expected),
            "patch {patch} onto {doc}"
        );
    }

    /// The examples of RFC 7386 appendix A whose patch is an object or a list.
    #[test]
    fn rfc7386_appendix_a() {
        check(json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"}));
        check(
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        );
        check(json!({"a": "b"}), json!({"a": null}), json!({}));
        check(
            json!({"a": "b", "b": "c"}),
            json!({"a": null}),
            json!({"b": "c"}),
        );
        check(json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"}));
        check(json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]}));
        check(
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        );
        check(
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        );
        check(json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"]));
        check(json!({"a": "b"}), json!(["c"]), json!(["c"]));
        check(
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        );
        check(
            json!([1, 2]),
            json!({"a": "b", "c": null}),
            json!({"a": "b"}),
        );
        check(
            json!({}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        );
    }

    #[test]
    fn kubernetes_object_updates() {
        check(
            json!({"metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}}, "spec": {"replicas": 1}}),
            json!({"metadata": {"labels": {"tier": null, "env": "prod"}}, "spec": {"replicas": 3}}),
            json!({"metadata": {"name": "web", "labels": {"app": "web", "env": "prod"}}, "spec": {"replicas": 3}}),
        );
    }

    #[test]
    fn inserted_values_lose_their_nulls_like_the_apiserver() {
        check(
            json!({"spec": {}}),
            json!({"spec": {"containers": [{"name": "a", "image": null}]}}),
            json!({"spec": {"containers": [{"name": "a"}]}}),
        );
        check(
            json!({"spec": {"containers": [{"name": "old"}]}}),
            json!({"spec": {"containers": [{"name": "a", "image": null}]}}),
            json!({"spec": {"containers": [{"name": "a"}]}}),
        );
        check(
            json!({"spec": {"selector": {"app": "x"}}}),
            json!({"spec": {"selector": [{"k": null}]}}),
            json!({"spec": {"selector": [{"k": null}]}}),
        );
    }

    #[test]
    fn null_and_scalar_patches_are_rejected() {
        for patch in [json!(null), json!("x"), json!(5), json!(true)] {
            let err = merge_patch(&json!({"a": 1}), &patch).unwrap_err();
            assert_eq!(err, PatchError::MergePatchInvalid);
            assert_eq!(err.to_string(), "Invalid JSON Patch");
        }
    }
}
