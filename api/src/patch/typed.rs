//! Schema-aware walks over objects for server-side apply (structured-merge-diff
//! `typed`): the set of fields a value sets, the fields two values differ in, the merge
//! of an applied configuration into a live object, and the removal of a set of fields.
//!
//! The schema is the type table of `schema`: objects are granular maps unless atomic,
//! lists are associative when declared `map` (items keyed by their key fields) or `set`
//! (items keyed by value), atomic otherwise. `null` counts as a value that is present
//! but empty.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::fieldpath::{path_string, values_equal, Path, PathElement, Set};
use super::schema::{self, ListKey, ListType, Ty};

/// The schema of one value: its type, and how it is listed when it is a list.
#[derive(Clone, Copy)]
pub(crate) struct Node {
    ty: Ty,
    list: ListType,
}

impl Node {
    /// The schema of a whole object of `kind`.
    pub(crate) fn root(kind: &str) -> Node {
        Node {
            ty: schema::root(kind),
            list: ListType::Atomic,
        }
    }

    fn field(self, name: &str) -> Node {
        let field = self.ty.field(name);
        Node {
            ty: field.ty,
            list: field.list,
        }
    }

    fn item(self) -> Node {
        Node {
            ty: self.ty,
            list: ListType::Atomic,
        }
    }

    /// How values at this node are walked, given the values on each side.
    fn shape(self, sides: &[Option<&Value>]) -> Shape {
        let present: Vec<&Value> = sides
            .iter()
            .flatten()
            .copied()
            .filter(|v| !v.is_null())
            .collect();
        let all = |f: fn(&Value) -> bool| !present.is_empty() && present.iter().all(|v| f(v));
        if all(Value::is_object) && !self.ty.is_atomic() {
            Shape::Map
        } else if all(Value::is_array) && self.list != ListType::Atomic {
            Shape::List
        } else {
            Shape::Leaf
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Leaf,
    Map,
    List,
}

/// The path element of an item of an associative list.
fn item_element(item: &Value, list: ListType) -> Result<PathElement, String> {
    match list {
        ListType::Map(keys) => keyed_element(item, keys),
        ListType::Set | ListType::Atomic => match item {
            Value::Object(_) => {
                Err("associative list without keys has an element that's a map type".to_string())
            }
            Value::Array(_) => {
                Err("not supported: associative list with lists as elements".to_string())
            }
            Value::Null => Err(
                "associative list without keys has an element that's an explicit null".to_string(),
            ),
            scalar => Ok(PathElement::Value(scalar.clone())),
        },
    }
}

fn keyed_element(item: &Value, keys: &[ListKey]) -> Result<PathElement, String> {
    let map = match item {
        Value::Null => {
            return Err("associative list with keys may not have a null element".to_string())
        }
        Value::Object(map) => map,
        _ => return Err("associative list with keys may not have non-map elements".to_string()),
    };
    let mut fields: Vec<(String, Value)> = keys
        .iter()
        .filter_map(|key| {
            let value = map
                .get(key.name)
                .cloned()
                .or_else(|| key.default.map(Value::from))?;
            Some((key.name.to_string(), value))
        })
        .collect();
    if fields.is_empty() {
        let names: Vec<String> = keys.iter().map(|k| format!("{:?}", k.name)).collect();
        return Err(format!(
            "associative list with keys has an element that omits all key fields [{}] (and doesn't have default values for any key fields)",
            names.join(" ")
        ));
    }
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(PathElement::Key(fields))
}

/// The items of a list grouped by path element, in order of first appearance; items
/// whose element cannot be built are left out.
fn grouped(items: &[Value], list: ListType) -> Vec<(PathElement, Vec<&Value>)> {
    let mut groups: Vec<(PathElement, Vec<&Value>)> = Vec::new();
    let mut index: BTreeMap<PathElement, usize> = BTreeMap::new();
    for item in items {
        let Ok(element) = item_element(item, list) else {
            continue;
        };
        match index.get(&element) {
            Some(&i) => groups[i].1.push(item),
            None => {
                index.insert(element.clone(), groups.len());
                groups.push((element, vec![item]));
            }
        }
    }
    groups
}

fn items_of(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn map_of(value: Option<&Value>) -> Option<&Map<String, Value>> {
    value.and_then(Value::as_object)
}

/// Checks that every associative list item has a path element, and (unless
/// `allow_duplicates`) that no two items share one.
pub(crate) fn validate(value: &Value, node: Node, allow_duplicates: bool) -> Result<(), String> {
    validate_at(value, node, allow_duplicates, &mut Vec::new())
}

fn validate_at(
    value: &Value,
    node: Node,
    allow_duplicates: bool,
    path: &mut Path,
) -> Result<(), String> {
    match node.shape(&[Some(value)]) {
        Shape::Leaf => Ok(()),
        Shape::Map => {
            for (key, child) in value.as_object().into_iter().flatten() {
                path.push(PathElement::Field(key.clone()));
                validate_at(child, node.field(key), allow_duplicates, path)?;
                path.pop();
            }
            Ok(())
        }
        Shape::List => {
            let mut seen = BTreeSet::new();
            for (i, item) in items_of(Some(value)).iter().enumerate() {
                let element = item_element(item, node.list)
                    .map_err(|err| format!("{}: element {i}: {err}", path_string(path)))?;
                if !seen.insert(element.clone()) {
                    if allow_duplicates {
                        continue;
                    }
                    return Err(format!(
                        "{}: duplicate entries for key {element}",
                        path_string(path)
                    ));
                }
                path.push(element);
                validate_at(item, node.item(), allow_duplicates, path)?;
                path.pop();
            }
            Ok(())
        }
    }
}

/// The fields `value` sets: its leaves, its list items, and its empty or null maps.
pub(crate) fn field_set(value: &Value, node: Node) -> Set {
    let mut set = Set::default();
    collect(value, node, &mut Vec::new(), &mut set);
    set
}

fn collect(value: &Value, node: Node, path: &mut Path, set: &mut Set) {
    match node.shape(&[Some(value)]) {
        Shape::Leaf => set.insert(path),
        Shape::Map => {
            for (key, child) in value.as_object().into_iter().flatten() {
                path.push(PathElement::Field(key.clone()));
                collect(child, node.field(key), path, set);
                if child.is_null() || child.as_object().is_some_and(Map::is_empty) {
                    set.insert(path);
                }
                path.pop();
            }
        }
        Shape::List => {
            for (element, items) in grouped(items_of(Some(value)), node.list) {
                path.push(element);
                if let [item] = items.as_slice() {
                    collect(item, node.item(), path, set);
                }
                set.insert(path);
                path.pop();
            }
        }
    }
}

/// The fields a change from `lhs` to `rhs` adds, modifies and removes.
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    pub added: Set,
    pub modified: Set,
    pub removed: Set,
}

impl Comparison {
    /// The comparison without the fields below `ignored`.
    pub(crate) fn excluding(self, ignored: &Set) -> Comparison {
        Comparison {
            added: self.added.recursive_difference(ignored),
            modified: self.modified.recursive_difference(ignored),
            removed: self.removed.recursive_difference(ignored),
        }
    }
}

pub(crate) fn compare(lhs: &Value, rhs: &Value, node: Node) -> Comparison {
    let mut out = Comparison::default();
    compare_at(Some(lhs), Some(rhs), node, &mut Vec::new(), &mut out);
    out
}

fn compare_at(
    lhs: Option<&Value>,
    rhs: Option<&Value>,
    node: Node,
    path: &mut Path,
    out: &mut Comparison,
) {
    let shape = node.shape(&[lhs, rhs]);
    let both_empty = match shape {
        Shape::Leaf => true,
        Shape::Map => {
            map_of(lhs).is_none_or(Map::is_empty) && map_of(rhs).is_none_or(Map::is_empty)
        }
        Shape::List => items_of(lhs).is_empty() && items_of(rhs).is_empty(),
    };
    if both_empty {
        compare_leaf(lhs, rhs, path, out);
        return;
    }
    if shape == Shape::Map {
        for key in union_keys(map_of(lhs), map_of(rhs)) {
            let (l, r) = (
                map_of(lhs).and_then(|m| m.get(&key)),
                map_of(rhs).and_then(|m| m.get(&key)),
            );
            path.push(PathElement::Field(key.clone()));
            compare_at(l, r, node.field(&key), path, out);
            path.pop();
        }
    } else {
        compare_items(items_of(lhs), items_of(rhs), node, path, out);
    }
    if lhs.is_none() {
        out.added.insert(path);
    } else if rhs.is_none() {
        out.removed.insert(path);
    }
}

fn compare_leaf(lhs: Option<&Value>, rhs: Option<&Value>, path: &Path, out: &mut Comparison) {
    match (lhs, rhs) {
        (None, Some(_)) => out.added.insert(path),
        (Some(_), None) => out.removed.insert(path),
        (Some(l), Some(r)) if !values_equal(l, r) => out.modified.insert(path),
        _ => {}
    }
}

fn union_keys(lhs: Option<&Map<String, Value>>, rhs: Option<&Map<String, Value>>) -> Vec<String> {
    let mut keys: Vec<String> = lhs.into_iter().flat_map(|m| m.keys().cloned()).collect();
    for key in rhs.into_iter().flat_map(|m| m.keys()) {
        if !lhs.is_some_and(|m| m.contains_key(key)) {
            keys.push(key.clone());
        }
    }
    keys
}

/// Compares associative lists item by item; duplicated items compare as a whole.
fn compare_items(lhs: &[Value], rhs: &[Value], node: Node, path: &mut Path, out: &mut Comparison) {
    let left = grouped(lhs, node.list);
    let right = grouped(rhs, node.list);
    let right_index: BTreeMap<&PathElement, &Vec<&Value>> =
        right.iter().map(|(e, items)| (e, items)).collect();
    let left_index: BTreeMap<&PathElement, &Vec<&Value>> =
        left.iter().map(|(e, items)| (e, items)).collect();
    let elements = left.iter().map(|(e, _)| e).chain(
        right
            .iter()
            .map(|(e, _)| e)
            .filter(|e| !left_index.contains_key(e)),
    );
    for element in elements {
        let l = left_index.get(element).map_or(&[][..], |v| v.as_slice());
        let r = right_index.get(element).map_or(&[][..], |v| v.as_slice());
        path.push(element.clone());
        match (l.len(), r.len()) {
            (0..=1, 0..=1) => compare_at(
                l.first().copied(),
                r.first().copied(),
                node.item(),
                path,
                out,
            ),
            (2.., 2..) => {
                let same = l.len() == r.len() && l.iter().zip(r).all(|(a, b)| values_equal(a, b));
                if !same {
                    out.modified.insert(path);
                }
            }
            (2.., _) => {
                if let Some(item) = r.first() {
                    compare_at(None, Some(item), node.item(), path, out);
                }
                out.removed.insert(path);
            }
            (_, _) => {
                if let Some(item) = l.first() {
                    compare_at(Some(item), None, node.item(), path, out);
                }
                out.added.insert(path);
            }
        }
        path.pop();
    }
}

/// Merges an applied configuration into a live object: maps key by key, associative
/// lists item by item, everything else taken from `rhs`.
pub(crate) fn merge(lhs: &Value, rhs: &Value, node: Node) -> Value {
    merge_at(Some(lhs), Some(rhs), node).unwrap_or(Value::Null)
}

fn merge_at(lhs: Option<&Value>, rhs: Option<&Value>, node: Node) -> Option<Value> {
    let r = match (lhs, rhs) {
        (None, None) => return None,
        (Some(v), None) | (None, Some(v)) => return Some(v.clone()),
        (Some(_), Some(r)) => r,
    };
    match node.shape(&[lhs, rhs]) {
        Shape::Leaf => Some(r.clone()),
        Shape::Map => {
            let (lm, rm) = (map_of(lhs), map_of(rhs));
            if lm.is_none_or(Map::is_empty) && rm.is_none_or(Map::is_empty) {
                return Some(r.clone());
            }
            let mut out = Map::new();
            for key in union_keys(lm, rm) {
                let merged = merge_at(
                    lm.and_then(|m| m.get(&key)),
                    rm.and_then(|m| m.get(&key)),
                    node.field(&key),
                );
                if let Some(value) = merged {
                    out.insert(key, value);
                }
            }
            Some(Value::Object(out))
        }
        Shape::List => {
            let (li, ri) = (items_of(lhs), items_of(rhs));
            if li.is_empty() && ri.is_empty() {
                return Some(r.clone());
            }
            Some(Value::Array(merge_items(li, ri, node)))
        }
    }
}

/// Merges associative lists: items of both sides merge, live-only items keep their
/// place, applied items keep the applied order.
fn merge_items(lhs: &[Value], rhs: &[Value], node: Node) -> Vec<Value> {
    let elements = |items: &[Value]| -> Vec<(PathElement, Value)> {
        items
            .iter()
            .filter_map(|item| Some((item_element(item, node.list).ok()?, item.clone())))
            .collect()
    };
    let (left, right) = (elements(lhs), elements(rhs));
    let mut left_index: BTreeMap<&PathElement, Option<&Value>> = BTreeMap::new();
    for (element, item) in &left {
        let seen = left_index.contains_key(element);
        left_index.insert(element, if seen { None } else { Some(item) });
    }
    let mut right_index: BTreeMap<&PathElement, &Value> = BTreeMap::new();
    for (element, item) in &right {
        right_index.entry(element).or_insert(item);
    }
    let mut shared = right
        .iter()
        .map(|(e, _)| e)
        .filter(|e| left_index.contains_key(e));
    let mut next_shared = shared.next();
    let mut merged_right: BTreeSet<&PathElement> = BTreeSet::new();
    let item = node.item();
    let mut out = Vec::with_capacity(left.len().max(right.len()));
    let (mut li, mut ri) = (0, 0);
    while li < left.len() || ri < right.len() {
        if li < left.len() && ri < right.len() {
            let element = &left[li].0;
            if *element == right[ri].0 {
                merged_right.insert(element);
                let l = left_index.get(element).copied().flatten();
                out.extend(merge_at(l, right_index.get(element).copied(), item));
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if right_index.contains_key(element) && next_shared.is_some_and(|s| s != element) {
                li += 1;
                continue;
            }
        }
        if li < left.len() {
            let element = &left[li].0;
            if !right_index.contains_key(element) {
                out.extend(merge_at(Some(&left[li].1), None, item));
                li += 1;
                continue;
            }
            if merged_right.contains(element) {
                li += 1;
            }
        }
        if ri < right.len() {
            let element = &right[ri].0;
            merged_right.insert(element);
            let l = left_index.get(element).copied().flatten();
            out.extend(merge_at(l, right_index.get(element).copied(), item));
            ri += 1;
            if next_shared == Some(element) {
                next_shared = shared.next();
            }
        }
    }
    out
}

/// `value` without the fields of `set` (a field's subtree goes with it); maps and lists
/// left empty by the removal go too.
pub(crate) fn remove_items(value: &Value, set: &Set, node: Node) -> Value {
    remove_at(value, set, node).unwrap_or_else(|| Value::Object(Map::new()))
}

fn remove_at(value: &Value, set: &Set, node: Node) -> Option<Value> {
    match node.shape(&[Some(value)]) {
        Shape::Leaf if value.is_object() || value.is_array() => None,
        Shape::Leaf => Some(value.clone()),
        Shape::Map => {
            let mut out = Map::new();
            for (key, child) in value.as_object().into_iter().flatten() {
                let element = PathElement::Field(key.clone());
                if set.has(std::slice::from_ref(&element)) {
                    continue;
                }
                let kept = match set.child(&element) {
                    Some(below) => remove_at(child, below, node.field(key)),
                    None => Some(child.clone()),
                };
                if let Some(kept) = kept {
                    out.insert(key.clone(), kept);
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Shape::List => {
            let mut out = Vec::new();
            for item in items_of(Some(value)) {
                let Ok(element) = item_element(item, node.list) else {
                    out.push(item.clone());
                    continue;
                };
                if set.has(std::slice::from_ref(&element)) {
                    continue;
                }
                let kept = match set.child(&element) {
                    Some(below) => remove_at(item, below, node.item()),
                    None => Some(item.clone()),
                };
                out.extend(kept);
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
    }
}

/// `set` with every struct field that has fields below it also a member, so that
/// removing it removes the whole subtree.
pub(crate) fn with_named_fields(set: &Set, node: Node) -> Set {
    let mut out = Set::default();
    for path in set.paths() {
        let mut current = node;
        for depth in 0..path.len() {
            if let PathElement::Field(name) = &path[depth] {
                if !current.ty.is_atomic() {
                    out.insert(&path[..=depth]);
                }
                current = current.field(name);
            } else {
                current = current.item();
            }
        }
        out.insert(&path);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(set: &Set) -> Vec<String> {
        set.paths().iter().map(|p| path_string(p)).collect()
    }

    fn pod() -> Node {
        Node::root("Pod")
    }

    #[test]
    fn field_sets_of_applied_configurations() {
        let config = json!({
            "apiVersion": "v1",
            "metadata": {"name": "p", "labels": {"app": "a"}},
            "spec": {
                "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}], "resources": {}}],
                "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "k"}]
            }
        });
        assert_eq!(
            paths(&field_set(&config, pod())),
            vec![
                ".apiVersion",
                ".metadata.name",
                ".metadata.labels.app",
                ".spec.nodeSelector",
                ".spec.tolerations",
                r#".spec.containers[name="c"]"#,
                r#".spec.containers[name="c"].image"#,
                r#".spec.containers[name="c"].name"#,
                r#".spec.containers[name="c"].resources"#,
                r#".spec.containers[name="c"].ports[containerPort=80,protocol="TCP"]"#,
                r#".spec.containers[name="c"].ports[containerPort=80,protocol="TCP"].containerPort"#,
            ]
        );
        let finalizers = json!({"metadata": {"finalizers": ["a"]}});
        assert_eq!(
            paths(&field_set(&finalizers, pod())),
            vec![r#".metadata.finalizers[="a"]"#]
        );
    }

    #[test]
    fn comparisons_mark_new_maps_and_lists_as_added() {
        let old = json!({"metadata": {"name": "p"}, "spec": {"containers": null}});
        let new = json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}});
        let cmp = compare(&old, &new, pod());
        assert_eq!(
            paths(&cmp.added),
            vec![
                ".metadata.labels",
                ".metadata.labels.a",
                r#".spec.containers[name="c"]"#,
                r#".spec.containers[name="c"].name"#,
                r#".spec.containers[name="c"].ports"#,
                r#".spec.containers[name="c"].ports[containerPort=80,protocol="TCP"]"#,
                r#".spec.containers[name="c"].ports[containerPort=80,protocol="TCP"].containerPort"#,
            ]
        );
        assert!(cmp.modified.is_empty() && cmp.removed.is_empty());
        let back = compare(&new, &old, pod());
        assert_eq!(back.added, Set::default());
        assert!(back.removed.has(&[
            PathElement::Field("metadata".into()),
            PathElement::Field("labels".into())
        ]));
        let changed = compare(
            &json!({"spec": {"nodeSelector": {"a": "1"}}}),
            &json!({"spec": {"nodeSelector": {"a": "2"}}}),
            pod(),
        );
        assert_eq!(paths(&changed.modified), vec![".spec.nodeSelector"]);
    }

    #[test]
    fn merges_keep_live_items_and_take_applied_values() {
        let live = json!({"spec": {"containers": [{"name": "a", "image": "a:1", "tty": true}, {"name": "b"}], "tolerations": [{"key": "x"}]}});
        let applied = json!({"spec": {"containers": [{"name": "c"}, {"name": "a", "image": "a:2"}], "tolerations": [{"key": "y"}]}});
        assert_eq!(
            merge(&live, &applied, pod()),
            json!({"spec": {
                "containers": [{"name": "c"}, {"name": "a", "image": "a:2", "tty": true}, {"name": "b"}],
                "tolerations": [{"key": "y"}]
            }})
        );
        let live = json!({"metadata": {"finalizers": ["a", "b"]}});
        let applied = json!({"metadata": {"finalizers": ["b", "c"]}});
        assert_eq!(
            merge(&live, &applied, pod()),
            json!({"metadata": {"finalizers": ["a", "b", "c"]}})
        );
    }

    #[test]
    fn removal_drops_subtrees_and_emptied_containers() {
        let value = json!({"metadata": {"labels": {"a": "1"}, "name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b", "image": "x"}]}});
        let mut set = Set::default();
        set.insert(&[
            PathElement::Field("metadata".into()),
            PathElement::Field("labels".into()),
            PathElement::Field("a".into()),
        ]);
        let b = PathElement::Key(vec![("name".into(), json!("b"))]);
        set.insert(&[
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            b.clone(),
            PathElement::Field("image".into()),
        ]);
        set.insert(&[
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            PathElement::Key(vec![("name".into(), json!("a"))]),
        ]);
        assert_eq!(
            remove_items(&value, &set, pod()),
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "b"}]}})
        );
        let named = with_named_fields(&set, pod());
        assert!(named.has(&[
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into())
        ]));
        assert!(!named.has(&[
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            b
        ]));
    }

    #[test]
    fn validation_reports_duplicates_and_missing_keys() {
        let dup = json!({"spec": {"containers": [{"name": "a"}, {"name": "a"}]}});
        assert_eq!(
            validate(&dup, pod(), false),
            Err(r#".spec.containers: duplicate entries for key [name="a"]"#.to_string())
        );
        assert_eq!(validate(&dup, pod(), true), Ok(()));
        let keyless = json!({"spec": {"containers": [{"image": "a"}]}});
        assert_eq!(
            validate(&keyless, pod(), true),
            Err(r#".spec.containers: element 0: associative list with keys has an element that omits all key fields ["name"] (and doesn't have default values for any key fields)"#.to_string())
        );
        assert!(validate(&json!({"metadata": {"finalizers": [{}]}}), pod(), true).is_err());
    }
}
