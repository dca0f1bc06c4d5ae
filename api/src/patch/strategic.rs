//! Strategic merge patch (`application/strategic-merge-patch+json`), as the apiserver
//! applies it (k8s.io/apimachinery `strategicpatch`, server side).
//!
//! Maps merge recursively and `null` deletes a key. Lists declared `patchStrategy:merge`
//! in the type table merge: maps by their merge key, scalars as a set; every other list
//! is replaced. Directives: `$patch: replace|delete` in maps, `$patch: replace|delete`
//! in merge-list items, `$retainKeys`, `$deleteFromPrimitiveList/<field>` and
//! `$setElementOrder/<field>`. Without `$setElementOrder`, items the patch adds to a
//! merge list come before the items only the server had, as on a real apiserver.
//!
//! Values the patch inserts lose their null members and their maps holding `$patch`.
//! Directive keys still left, and null members, are dropped from the result, as the
//! apiserver's decoding into typed objects drops them.

use serde_json::{Map, Value};

use super::gofmt::{go_s, go_type, go_v};
use super::schema::{self, Field, Strategy, Ty};
use super::{PatchError, Result};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";
const MAP_TYPE: &str = "map[string]interface {}";
const LIST_TYPE: &str = "[]interface {}";

type Object = Map<String, Value>;

/// Applies a strategic merge patch to `doc`, an object of `kind`.
pub fn strategic_merge_patch(kind: &str, doc: &Value, patch: &Value) -> Result<Value> {
    let doc = as_object(doc)?;
    let patch = match patch {
        Value::Null => return Ok(Value::Object(doc.clone())),
        other => as_object(other)?,
    };
    let merged = merge_map(doc.clone(), patch.clone(), schema::root(kind))?;
    Ok(cleaned(Value::Object(merged)))
}

fn as_object(value: &Value) -> Result<&Object> {
    value.as_object().ok_or_else(|| {
        let kind = match value {
            Value::Array(_) => "array",
            Value::String(_) => "string",
            Value::Number(_) => "number",
            _ => "bool",
        };
        PatchError::Decode(format!(
            "json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
        ))
    })
}

/// Merges a patch map into an original map of type `ty`.
fn merge_map(mut original: Object, mut patch: Object, ty: Ty) -> Result<Object> {
    if let Some(directive) = patch.get(DIRECTIVE).cloned() {
        return map_directive(&directive, patch);
    }
    retain_keys(&mut original, &mut patch)?;
    apply_element_orders(&mut original, &mut patch, ty)?;
    for (key, value) in patch {
        if key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            let prefix = DELETE_FROM_PRIMITIVE_LIST;
            let name = directive_target(&key, prefix, PatchError::BadPrimitiveList)?;
            merge_field(&mut original, name, value, ty.field(name), true)?;
        } else {
            merge_field(&mut original, &key, value, ty.field(&key), false)?;
        }
    }
    Ok(original)
}

/// `$patch` in a map: `replace` keeps the patch as it is, `delete` empties the map.
fn map_directive(directive: &Value, mut patch: Object) -> Result<Object> {
    match directive.as_str() {
        Some("replace") => {
            patch.shift_remove(DIRECTIVE);
            Ok(patch)
        }
        Some("delete") => Ok(Object::new()),
        _ => Err(PatchError::UnknownPatchType {
            directive: go_s(directive),
            map: go_v(&Value::Object(patch)),
        }),
    }
}

/// `$retainKeys`: the original keeps only the listed keys; the patch may not set others.
fn retain_keys(original: &mut Object, patch: &mut Object) -> Result<()> {
    let Some(list) = patch.shift_remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = list else {
        return Err(PatchError::BadRetainKeys);
    };
    let retained = |key: &str| list.iter().any(|v| v.as_str() == Some(key));
    let unlisted = patch.iter().any(|(key, value)| {
        !value.is_null()
            && !key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            && !key.starts_with(SET_ELEMENT_ORDER)
            && !retained(key)
    });
    if unlisted {
        return Err(PatchError::BadRetainKeys);
    }
    original.retain(|key, _| retained(key));
    Ok(())
}

/// The field a `<prefix>/<field>` directive is about.
fn directive_target<'a>(key: &'a str, prefix: &str, malformed: PatchError) -> Result<&'a str> {
    match key.split_once('/') {
        Some((head, field)) if head == prefix => Ok(field),
        _ => Err(malformed),
    }
}

/// Merges one patch entry into the original map. A `$deleteFromPrimitiveList` list
/// (`delete_list`) only ever removes items from an existing list.
fn merge_field(
    original: &mut Object,
    key: &str,
    value: Value,
    field: Field,
    delete_list: bool,
) -> Result<()> {
    if value.is_null() {
        original.shift_remove(key);
        return Ok(());
    }
    let Some(current) = original.get_mut(key) else {
        if !delete_list {
            if let Some(value) = inserted(value) {
                original.insert(key.to_string(), value);
            }
        }
        return Ok(());
    };
    let merged = match (std::mem::take(current), value) {
        (Value::Object(o), Value::Object(p)) => Some(Value::Object(merge_map(o, p, field.ty)?)),
        (Value::Array(o), Value::Array(p)) => {
            Some(Value::Array(merge_list_field(o, p, field, delete_list)?))
        }
        (current, replacement) if delete_list && !same_kind(&current, &replacement) => {
            Some(current)
        }
        (_, replacement) => inserted(replacement),
    };
    match merged {
        Some(merged) => *current = merged,
        None => {
            original.shift_remove(key);
        }
    }
    Ok(())
}

fn same_kind(a: &Value, b: &Value) -> bool {
    go_type(a) == go_type(b)
}

/// A patch value as it goes into the object where nothing merges with it: without null
/// members, and without the maps holding a `$patch` directive (`None` if it is one).
fn inserted(value: Value) -> Option<Value> {
    match value {
        Value::Object(map) if map.contains_key(DIRECTIVE) => None,
        Value::Object(map) => Some(Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .filter_map(|(k, v)| Some((k, inserted(v)?)))
                .collect(),
        )),
        Value::Array(items) => Some(Value::Array(
            items.into_iter().filter_map(inserted).collect(),
        )),
        other => Some(other),
    }
}

/// Merges a patch list into an original list according to the field's strategy; a
/// deletion list removes scalars whatever the strategy.
fn merge_list_field(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: Field,
    delete_list: bool,
) -> Result<Vec<Value>> {
    match field.strategy {
        Strategy::MergeByKey(key) => merge_list(original, patch, key, field.ty, delete_list),
        Strategy::MergeScalars => merge_list(original, patch, "", field.ty, delete_list),
        Strategy::Replace if delete_list => merge_list(original, patch, "", field.ty, true),
        Strategy::Replace => Ok(patch),
    }
}

/// The merge key a list is ordered by (`""` for lists of scalars and replaced lists).
fn merge_key(field: Field) -> &'static str {
    match field.strategy {
        Strategy::MergeByKey(key) => key,
        Strategy::MergeScalars | Strategy::Replace => "",
    }
}

/// Merges a merge list: maps by `key`, scalars as a set (or, for a
/// `$deleteFromPrimitiveList` list, minus its items).
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    item_ty: Ty,
    delete_list: bool,
) -> Result<Vec<Value>> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let maps = item_type(&[&original, &patch])? == MAP_TYPE;
    let (server_order, patch, merged) = if !maps {
        if delete_list {
            return Ok(original
                .into_iter()
                .filter(|v| !patch.contains(v))
                .collect());
        }
        let merged = deduplicated(original.iter().chain(&patch).cloned());
        (original, patch, merged)
    } else {
        if key.is_empty() {
            return Err(PatchError::NoMergeKey("string".to_string()));
        }
        let (original, patch) = apply_item_directives(original, patch, key)?;
        let merged = merge_items(original.clone(), &patch, key, item_ty)?;
        (original, patch, merged)
    };
    let (patch_items, server_only) = partition(merged, &patch, key)?;
    normalize_order(patch_items, server_only, &patch, &server_order, key, maps)
}

/// The Go type shared by the items of the given lists.
fn item_type(lists: &[&[Value]]) -> Result<&'static str> {
    let mut found = None;
    for item in lists.iter().flat_map(|list| list.iter()) {
        match found {
            None if item.is_array() => return Err(PatchError::ListOfLists),
            None => found = Some(go_type(item)),
            Some(ty) if ty != go_type(item) => {
                let all = lists.iter().map(|l| Value::Array(l.to_vec())).collect();
                return Err(PatchError::MixedListTypes(go_v(&Value::Array(all))));
            }
            Some(_) => {}
        }
    }
    found.ok_or(PatchError::NoElements)
}

fn deduplicated(items: impl Iterator<Item = Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Handles `$patch` items of a merge list of maps: `delete` removes the original items
/// with that key, `replace` makes the patch's other items the whole list.
fn apply_item_directives(
    original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut original = original;
    let mut rest = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let directive = item.get(DIRECTIVE).cloned();
        match directive.as_ref().map(|d| (d, d.as_str())) {
            None => rest.push(item),
            Some((_, Some("delete"))) => {
                let value = item.get(key).ok_or_else(|| missing_merge_key(&item, key))?;
                original.retain(|o| o.get(key) != Some(value));
            }
            Some((_, Some("replace"))) => replace = true,
            Some((_, Some("merge"))) => return Err(PatchError::MergeDirectiveInList),
            Some((d, _)) => {
                return Err(PatchError::UnknownPatchType {
                    directive: go_s(d),
                    map: go_v(&item),
                })
            }
        }
    }
    Ok(if replace {
        (rest, Vec::new())
    } else {
        (original, rest)
    })
}

/// Merges each patch item into the original item with the same key, or appends it.
fn merge_items(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    item_ty: Ty,
) -> Result<Vec<Value>> {
    for item in patch {
        let value = item.get(key).ok_or_else(|| missing_merge_key(item, key))?;
        let (Some(index), Value::Object(p)) = (position_by_key(&original, key, value)?, item)
        else {
            original.push(item.clone());
            continue;
        };
        if let Value::Object(o) = std::mem::take(&mut original[index]) {
            original[index] = Value::Object(merge_map(o, p.clone(), item_ty)?);
        }
    }
    Ok(original)
}

/// The index of the map in `items` whose `key` is `value`; every item must be a map.
fn position_by_key(items: &[Value], key: &str, value: &Value) -> Result<Option<usize>> {
    for (index, item) in items.iter().enumerate() {
        let Value::Object(map) = item else {
            return Err(PatchError::NotAMap(index));
        };
        if map.get(key) == Some(value) {
            return Ok(Some(index));
        }
    }
    Ok(None)
}

fn missing_merge_key(item: &Value, key: &str) -> PatchError {
    PatchError::MissingMergeKey {
        map: go_v(item),
        key: key.to_string(),
    }
}

/// Splits merged items into those named by `by` and those only the server had.
fn partition(merged: Vec<Value>, by: &[Value], key: &str) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut named = Vec::new();
    let mut server_only = Vec::new();
    for item in merged {
        let present = if key.is_empty() {
            by.contains(&item)
        } else {
            let value = checked_key(&item, key)?;
            position_by_key(by, key, value)?.is_some()
        };
        if present {
            named.push(item);
        } else {
            server_only.push(item);
        }
    }
    Ok((named, server_only))
}

/// The merge key of an item that must be a map holding it.
fn checked_key<'a>(item: &'a Value, key: &str) -> Result<&'a Value> {
    if !item.is_object() {
        return Err(PatchError::BadArgType {
            expected: MAP_TYPE,
            actual: go_type(item),
        });
    }
    item.get(key).ok_or_else(|| missing_merge_key(item, key))
}

/// Orders patch items by `patch_order` and server-only items by `server_order`, then
/// interleaves them keeping both relative orders.
fn normalize_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: &str,
    maps: bool,
) -> Result<Vec<Value>> {
    let patch_items = sorted_by(patch_items, patch_order, key, maps)?;
    let server_only = sorted_by(server_only, server_order, key, maps)?;
    Ok(interleave(server_only, patch_items, server_order, key))
}

/// Sorts items by their position in `order`; `$patch: delete` items go last.
fn sorted_by(items: Vec<Value>, order: &[Value], key: &str, maps: bool) -> Result<Vec<Value>> {
    let (mut items, deletions): (Vec<Value>, Vec<Value>) = if maps {
        for item in items.iter().chain(order) {
            checked_key(item, key)?;
        }
        items.into_iter().partition(|item| !is_delete_item(item))
    } else {
        (items, Vec::new())
    };
    items.sort_by_cached_key(|item| position(order, item, key));
    items.extend(deletions);
    Ok(items)
}

fn is_delete_item(item: &Value) -> bool {
    item.get(DIRECTIVE).and_then(Value::as_str) == Some("delete")
}

/// The position of `item` in `list`: by merge key for maps, by value for scalars.
fn position(list: &[Value], item: &Value, key: &str) -> Option<usize> {
    if key.is_empty() {
        return list.iter().position(|v| v == item);
    }
    let wanted = item.get(key).unwrap_or(&Value::Null);
    list.iter()
        .position(|v| v.get(key).unwrap_or(&Value::Null) == wanted)
}

/// Merges two lists each already in order: a server-only item goes first only when both
/// items are in `server_order` and it comes earlier there.
fn interleave(
    server_only: Vec<Value>,
    patch_items: Vec<Value>,
    server_order: &[Value],
    key: &str,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(server_only.len() + patch_items.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    while let (Some(l), Some(r)) = (left.peek(), right.peek()) {
        let server_first = match (
            position(server_order, l, key),
            position(server_order, r, key),
        ) {
            (Some(li), Some(ri)) => li < ri,
            _ => false,
        };
        let next = if server_first {
            left.next()
        } else {
            right.next()
        };
        out.extend(next);
    }
    out.extend(left);
    out.extend(right);
    out
}

/// Processes every `$setElementOrder/<field>` directive of a patch map: merges the
/// field's list and puts its items in the order the directive gives.
fn apply_element_orders(original: &mut Object, patch: &mut Object, ty: Ty) -> Result<()> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for directive in directives {
        let Some(order) = patch.shift_remove(&directive) else {
            continue;
        };
        let Value::Array(order) = order else {
            return Err(PatchError::BadArgType {
                expected: LIST_TYPE,
                actual: go_type(&order),
            });
        };
        let name = directive_target(
            &directive,
            SET_ELEMENT_ORDER,
            PatchError::BadSetElementOrder,
        )?;
        if let Some(ordered) = ordered_list(original, patch, name, &order, ty.field(name))? {
            insert_in_place(original, name, Value::Array(ordered));
            patch.shift_remove(name);
        }
    }
    Ok(())
}

/// The merged list of one `$setElementOrder` directive, in order; `None` when neither
/// side has the list.
fn ordered_list(
    original: &Object,
    patch: &Object,
    name: &str,
    order: &[Value],
    field: Field,
) -> Result<Option<Vec<Value>>> {
    let current = list_at(original, name)?;
    let patched = list_at(patch, name)?;
    let key = merge_key(field);
    check_order(patched.unwrap_or(&[]), order, key)?;
    let merged = match (current, patched) {
        (Some(c), None) => c.to_vec(),
        (None, Some(p)) => p.iter().cloned().filter_map(inserted).collect(),
        (Some(c), Some(p)) => merge_list_field(c.to_vec(), p.to_vec(), field, false)?,
        (None, None) => return Ok(None),
    };
    let (named, server_only) = partition(merged, order, key)?;
    let current = current.unwrap_or(&[]);
    let maps = item_type(&[current, patched.unwrap_or(&[])])? == MAP_TYPE;
    normalize_order(named, server_only, order, current, key, maps).map(Some)
}

fn list_at<'a>(map: &'a Object, name: &str) -> Result<Option<&'a [Value]>> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(other) => Err(PatchError::BadArgType {
            expected: LIST_TYPE,
            actual: go_type(other),
        }),
    }
}

fn insert_in_place(map: &mut Object, key: &str, value: Value) {
    match map.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            map.insert(key.to_string(), value);
        }
    }
}

/// Checks that the patch list's items appear in the `$setElementOrder` list, in order.
fn check_order(patch_list: &[Value], order: &[Value], key: &str) -> Result<()> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let mut items = Vec::with_capacity(patch_list.len());
    for item in patch_list {
        if !key.is_empty() && !item.is_object() {
            return Err(PatchError::BadArgType {
                expected: MAP_TYPE,
                actual: go_type(item),
            });
        }
        if key.is_empty() || !is_delete_item(item) {
            items.push(item);
        }
    }
    let (mut p, mut o) = (0, 0);
    while p < items.len() && o < order.len() {
        if items[p].get(DIRECTIVE).is_some() {
            p += 1;
            continue;
        }
        if same_key(items[p], &order[o], key)? {
            p += 1;
        }
        o += 1;
    }
    if p < items.len() {
        return Err(PatchError::SetElementOrderMismatch {
            patch: go_v(&Value::Array(patch_list.to_vec())),
            order: go_v(&Value::Array(order.to_vec())),
        });
    }
    Ok(())
}

fn same_key(left: &Value, right: &Value, key: &str) -> Result<bool> {
    if key.is_empty() {
        return Ok(left == right);
    }
    Ok(checked_key(left, key)? == checked_key(right, key)?)
}

/// Drops directive keys and null members left in the merged object.
fn cleaned(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, v)| !is_directive(k) && !v.is_null())
                .map(|(k, v)| (k, cleaned(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(cleaned).collect()),
        other => other,
    }
}

fn is_directive(key: &str) -> bool {
    key == DIRECTIVE
        || key == RETAIN_KEYS
        || key.starts_with(SET_ELEMENT_ORDER)
        || key.starts_with(DELETE_FROM_PRIMITIVE_LIST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(kind: &str, doc: Value, patch: Value, expected: Value) {
        let got = strategic_merge_patch(kind, &doc, &patch);
        assert_eq!(got, Ok(expected), "{kind}: patch {patch} onto {doc}");
    }

    fn check_err(kind: &str, doc: Value, patch: Value, message: &str) {
        let got = strategic_merge_patch(kind, &doc, &patch).map_err(|e| e.to_string());
        assert_eq!(
            got,
            Err(message.to_string()),
            "{kind}: patch {patch} onto {doc}"
        );
    }

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c", "labels": {"a": "1", "b": "2"}}, "data": {"k": "v"}}),
            json!({"metadata": {"labels": {"a": null, "c": "3"}}, "data": {"k2": "v2"}}),
            json!({"metadata": {"name": "c", "labels": {"b": "2", "c": "3"}}, "data": {"k": "v", "k2": "v2"}}),
        );
        check(
            "ConfigMap",
            json!({"data": {"k": "v"}}),
            json!({"data": null}),
            json!({}),
        );
        check(
            "ConfigMap",
            json!({"data": {"k": "v"}}),
            json!(null),
            json!({"data": {"k": "v"}}),
        );
    }

    #[test]
    fn containers_merge_by_name_new_ones_first() {
        check(
            "Pod",
            pod(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}])),
            json!({"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}}),
            pod(json!([
                {"name": "a", "image": "a:1"},
                {"name": "b", "image": "b:2"},
                {"name": "c", "image": "c:1"}
            ])),
        );
        check(
            "Pod",
            pod(json!([{"name": "a", "image": "a:1"}])),
            json!({"spec": {"containers": [{"name": "sidecar", "image": "s:1"}]}}),
            pod(json!([{"name": "sidecar", "image": "s:1"}, {"name": "a", "image": "a:1"}])),
        );
    }

    #[test]
    fn nested_merge_lists_in_deployment_templates() {
        let deployment = |container: Value| json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [container]}}}});
        check(
            "Deployment",
            deployment(json!({
                "name": "web",
                "ports": [{"containerPort": 80, "name": "http"}],
                "env": [{"name": "A", "value": "1"}],
                "volumeMounts": [{"mountPath": "/data", "name": "data"}],
                "args": ["--a", "--b"]
            })),
            json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{
                "name": "web",
                "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443}],
                "env": [{"name": "A", "value": "2"}],
                "volumeMounts": [{"mountPath": "/data", "readOnly": true}],
                "args": ["--c"]
            }]}}}}),
            json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{
                "name": "web",
                "ports": [{"containerPort": 80, "name": "web"}, {"containerPort": 443}],
                "env": [{"name": "A", "value": "2"}],
                "volumeMounts": [{"mountPath": "/data", "name": "data", "readOnly": true}],
                "args": ["--c"]
            }]}}}}),
        );
    }

    #[test]
    fn lists_without_merge_strategy_are_replaced() {
        check(
            "Pod",
            json!({"spec": {"tolerations": [{"key": "a"}], "containers": []}}),
            json!({"spec": {"tolerations": [{"key": "b"}]}}),
            json!({"spec": {"tolerations": [{"key": "b"}], "containers": []}}),
        );
        check(
            "Widget",
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"containers": [{"name": "b"}]}}),
            json!({"spec": {"containers": [{"name": "b"}]}}),
        );
    }

    #[test]
    fn service_ports_status_conditions_and_owner_references() {
        check(
            "Service",
            json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "a"}}}),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}], "selector": {"tier": "b"}}}),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}], "selector": {"app": "a", "tier": "b"}}}),
        );
        check(
            "Deployment",
            json!({"status": {"conditions": [{"type": "Available", "status": "False"}, {"type": "Progressing", "status": "True"}]}}),
            json!({"status": {"conditions": [{"type": "Available", "status": "True"}]}}),
            json!({"status": {"conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}]}}),
        );
        check(
            "ReplicaSet",
            json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}}),
            json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}}),
            json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}, {"uid": "1", "name": "a"}]}}),
        );
    }

    #[test]
    fn finalizers_merge_as_a_set_and_delete_from_primitive_list() {
        check(
            "Namespace",
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
            json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        );
        check(
            "Namespace",
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["c"]}}),
            json!({"metadata": {"finalizers": ["c", "a", "b"]}}),
        );
        check(
            "Namespace",
            json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            json!({"metadata": {"finalizers": ["a", "c"]}}),
        );
        check(
            "Namespace",
            json!({"metadata": {"name": "n"}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}),
            json!({"metadata": {"name": "n"}}),
        );
        check(
            "Pod",
            pod(json!([{"name": "a", "args": ["--x", "--y"]}])),
            json!({"spec": {"containers": [{"name": "a", "$deleteFromPrimitiveList/args": ["--x"]}]}}),
            pod(json!([{"name": "a", "args": ["--y"]}])),
        );
        check(
            "Node",
            json!({"spec": {"podCIDRs": ["10.0.0.0/24"]}}),
            json!({"spec": {"podCIDRs": ["10.0.1.0/24"], "$deleteFromPrimitiveList/podCIDRs": ["10.0.0.0/24"]}}),
            json!({"spec": {"podCIDRs": ["10.0.1.0/24"]}}),
        );
    }

    #[test]
    fn patch_directive_in_list_items() {
        check(
            "Pod",
            pod(json!([{"name": "a"}, {"name": "b"}])),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
            pod(json!([{"name": "b"}])),
        );
        check(
            "Pod",
            pod(json!([{"name": "a", "image": "x"}, {"name": "b"}])),
            json!({"spec": {"containers": [{"name": "c"}, {"$patch": "replace"}]}}),
            pod(json!([{"name": "c"}])),
        );
    }

    #[test]
    fn patch_directive_in_maps() {
        check(
            "ConfigMap",
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}}}),
            json!({"metadata": {"labels": {"c": "3"}}}),
        );
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c"}, "data": {"a": "1"}}),
            json!({"data": {"$patch": "delete"}}),
            json!({"metadata": {"name": "c"}, "data": {}}),
        );
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c"}}),
            json!({"data": {"$patch": "replace", "a": "1"}}),
            json!({"metadata": {"name": "c"}}),
        );
    }

    #[test]
    fn retain_keys_clears_unlisted_fields() {
        check(
            "Deployment",
            json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        check_err(
            "Deployment",
            json!({"spec": {"strategy": {"type": "RollingUpdate"}}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
            "invalid patch format of retainKeys",
        );
        check_err(
            "Deployment",
            json!({"spec": {"strategy": {}}}),
            json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
            "invalid patch format of retainKeys",
        );
    }

    #[test]
    fn set_element_order_orders_merged_lists() {
        check(
            "Pod",
            pod(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}])),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}, {"name": "b"}],
                "containers": [{"name": "a", "image": "a:2"}]
            }}),
            pod(json!([{"name": "c"}, {"name": "a", "image": "a:2"}, {"name": "b"}])),
        );
        check(
            "Pod",
            pod(json!([{"name": "a"}, {"name": "b"}])),
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}], "containers": [{"name": "c"}]}}),
            pod(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}])),
        );
        check(
            "Namespace",
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"$setElementOrder/finalizers": ["b", "a"]}}),
            json!({"metadata": {"finalizers": ["b", "a"]}}),
        );
        check_err(
            "Pod",
            pod(json!([{"name": "a"}, {"name": "b"}])),
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "a"}, {"name": "b"}]}}),
            "The order in patch list:\n[map[name:a] map[name:b]]\n doesn't match $setElementOrder list:\n[map[name:b] map[name:a]]\n",
        );
        check_err(
            "Pod",
            pod(json!([])),
            json!({"spec": {"$setElementOrder": []}}),
            "invalid patch format of setElementOrder list",
        );
    }

    #[test]
    fn strategic_errors_read_like_the_apiserver() {
        check_err(
            "Pod",
            pod(json!([{"name": "a"}])),
            json!({"spec": {"containers": [{"image": "nginx", "ports": [{"containerPort": 80}]}]}}),
            "map: map[image:nginx ports:[map[containerPort:80]]] does not contain declared merge key: name",
        );
        check_err(
            "Pod",
            pod(json!([{"name": "a"}])),
            json!({"spec": {"containers": [{"name": "a", "$patch": "frob"}]}}),
            "unknown patch type: frob in map: map[$patch:frob name:a]",
        );
        check_err(
            "ConfigMap",
            json!({"data": {"a": "1"}}),
            json!({"data": {"$patch": "merge"}}),
            "unknown patch type: merge in map: map[$patch:merge]",
        );
        check_err(
            "Pod",
            pod(json!([{"name": "a"}])),
            json!({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}),
            "merging lists cannot yet be specified in the patch",
        );
        check_err(
            "Namespace",
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}}),
            "invalid patch format of primitive list",
        );
        check_err(
            "Namespace",
            json!({"metadata": {"finalizers": []}}),
            json!({"metadata": {"finalizers": [["b"]]}}),
            "lists of lists are not supported",
        );
        check_err(
            "Namespace",
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [["b"]]}}),
            "list element types are not identical: [[a] [[b]]]",
        );
        check_err(
            "Namespace",
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [1]}}),
            "list element types are not identical: [[a] [1]]",
        );
        check_err(
            "Pod",
            json!({}),
            json!([1]),
            "json: cannot unmarshal array into Go value of type map[string]interface {}",
        );
    }

    #[test]
    fn directives_and_nulls_in_inserted_values_are_dropped() {
        check(
            "Pod",
            json!({"spec": {}}),
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}, {"name": "b"}], "$setElementOrder/volumes": []}}),
            json!({"spec": {"containers": [{"name": "b"}]}}),
        );
        check(
            "Pod",
            json!({"spec": {}}),
            json!({"spec": {"affinity": {"$patch": "delete"}, "hostname": "h"}}),
            json!({"spec": {"hostname": "h"}}),
        );
        check(
            "ConfigMap",
            json!({"metadata": {"name": "c"}}),
            json!({"metadata": {"annotations": {"a": null, "b": "1"}}}),
            json!({"metadata": {"name": "c", "annotations": {"b": "1"}}}),
        );
    }

    #[test]
    fn client_side_apply_and_edit_patches() {
        let deployment = |spec: Value| json!({"spec": {"template": {"spec": spec}}});
        check(
            "Deployment",
            deployment(json!({
                "containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}],
                "volumes": [{"name": "v", "emptyDir": {}}]
            })),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"name": "a", "image": "a:2"}, {"$patch": "delete", "name": "b"}],
                "$setElementOrder/volumes": [{"name": "v"}],
                "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}, "name": "v"}]
            }}}}),
            deployment(json!({
                "containers": [{"name": "a", "image": "a:2"}],
                "volumes": [{"name": "v", "configMap": {"name": "cm"}}]
            })),
        );
    }
}
