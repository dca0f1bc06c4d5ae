//! Field paths and field sets of server-side apply (structured-merge-diff `fieldpath`):
//! a path is a list of elements (`.spec`, `[name="nginx"]`, `[="value"]`, `[0]`), a set
//! is a sorted tree of paths, and `FieldsV1` is its JSON encoding in `managedFields`
//! (`{"f:spec":{"f:replicas":{}}}`, `k:{"containerPort":80,"protocol":"TCP"}`,
//! `v:"value"`, `i:0`, and `.` for a node that is itself a member).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

/// One step of a field path.
#[derive(Clone, Debug)]
pub(crate) enum PathElement {
    /// A field of a map or struct.
    Field(String),
    /// An item of an associative list, by its key fields sorted by name.
    Key(Vec<(String, Value)>),
    /// An item of a set.
    Value(Value),
    /// An item of a list by position (only found in decoded field sets).
    Index(usize),
}

pub(crate) type Path = Vec<PathElement>;

impl PathElement {
    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The `FieldsV1` key of this element.
    fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let map: Map<String, Value> = fields.iter().cloned().collect();
                format!("k:{}", Value::Object(map))
            }
            PathElement::Value(value) => format!("v:{value}"),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    /// Parses a `FieldsV1` key.
    fn decode(key: &str) -> Result<PathElement, String> {
        let (kind, rest) = key
            .split_once(':')
            .filter(|(kind, _)| kind.len() == 1)
            .ok_or_else(|| format!("missing colon: {key}"))?;
        match kind {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(map)) => {
                    let mut fields: Vec<(String, Value)> = map.into_iter().collect();
                    fields.sort_by(|a, b| a.0.cmp(&b.0));
                    Ok(PathElement::Key(fields))
                }
                _ => Err(format!("invalid key element: {key}")),
            },
            "v" => serde_json::from_str(rest)
                .map(PathElement::Value)
                .map_err(|err| format!("invalid value element {key}: {err}")),
            "i" => rest
                .parse()
                .map(PathElement::Index)
                .map_err(|err| format!("invalid index element {key}: {err}")),
            _ => Err("unknown path element type".to_string()),
        }
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => compare_fields(a, b),
            (PathElement::Value(a), PathElement::Value(b)) => compare_values(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", value_string(v)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(value) => write!(f, "[={}]", value_string(value)),
            PathElement::Index(index) => write!(f, "[{index}]"),
        }
    }
}

/// A path as the apiserver prints it in conflicts: `.spec.template.spec.containers[name="web"].image`.
pub(crate) fn path_string(path: &[PathElement]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// A key or set value in a path: strings quoted, other scalars bare.
fn value_string(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(value_string).collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}={}", value_string(v)))
                .collect();
            format!("{{{}}}", items.join(";"))
        }
        other => other.to_string(),
    }
}

fn compare_fields(a: &[(String, Value)], b: &[(String, Value)]) -> Ordering {
    compare_entries(a.iter().map(|(k, v)| (k, v)), b.iter().map(|(k, v)| (k, v)))
}

/// Compares sorted `(name, value)` sequences: name, then value, then length.
fn compare_entries<'a>(
    a: impl ExactSizeIterator<Item = (&'a String, &'a Value)>,
    b: impl ExactSizeIterator<Item = (&'a String, &'a Value)>,
) -> Ordering {
    let (len_a, len_b) = (a.len(), b.len());
    for ((ka, va), (kb, vb)) in a.zip(b) {
        let order = ka.cmp(kb).then_with(|| compare_values(va, vb));
        if order != Ordering::Equal {
            return order;
        }
    }
    len_a.cmp(&len_b)
}

fn sorted_entries(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|p, q| p.0.cmp(q.0));
    entries
}

/// The total order of structured-merge-diff values: numbers (ints and floats compared
/// by value), then strings, booleans, lists, maps and null.
pub(crate) fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (va, vb) in x.iter().zip(y) {
                let order = compare_values(va, vb);
                if order != Ordering::Equal {
                    return order;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            compare_entries(sorted_entries(x).into_iter(), sorted_entries(y).into_iter())
        }
        _ => value_rank(a).cmp(&value_rank(b)),
    }
}

fn compare_numbers(x: &serde_json::Number, y: &serde_json::Number) -> Ordering {
    match (x.as_i64(), y.as_i64()) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => {
            let (a, b) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            a.partial_cmp(&b).unwrap_or(Ordering::Equal)
        }
    }
}

fn value_rank(value: &Value) -> u8 {
    match value {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Array(_) => 3,
        Value::Object(_) => 4,
        Value::Null => 5,
    }
}

/// Whether two values are equal as structured-merge-diff compares them (an int and a
/// float of the same value are equal).
pub(crate) fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

/// A set of field paths: the paths ending here (`members`) and the subtrees below.
/// Invariant: no child set is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Set {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, Set>,
}

impl Set {
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    pub(crate) fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    pub(crate) fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// The paths below `element`, relative to it.
    pub(crate) fn child(&self, element: &PathElement) -> Option<&Set> {
        self.children.get(element)
    }

    pub(crate) fn union(&self, other: &Set) -> Set {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (element, set) in &other.children {
            let merged = match out.children.get(element) {
                Some(mine) => mine.union(set),
                None => set.clone(),
            };
            out.children.insert(element.clone(), merged);
        }
        out
    }

    pub(crate) fn intersection(&self, other: &Set) -> Set {
        let members = self.members.intersection(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(element, set)| {
                let common = set.intersection(other.children.get(element)?);
                (!common.is_empty()).then(|| (element.clone(), common))
            })
            .collect();
        Set { members, children }
    }

    /// The paths of `self` that are not paths of `other`.
    pub(crate) fn difference(&self, other: &Set) -> Set {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter_map(|(element, set)| {
                let rest = match other.children.get(element) {
                    Some(theirs) => set.difference(theirs),
                    None => set.clone(),
                };
                (!rest.is_empty()).then(|| (element.clone(), rest))
            })
            .collect();
        Set { members, children }
    }

    /// Like [`Set::difference`], and also drops every path below a member of `other`.
    pub(crate) fn recursive_difference(&self, other: &Set) -> Set {
        let members = self.members.difference(&other.members).cloned().collect();
        let children = self
            .children
            .iter()
            .filter(|(element, _)| !other.members.contains(element))
            .filter_map(|(element, set)| {
                let rest = match other.children.get(element) {
                    Some(theirs) => set.recursive_difference(theirs),
                    None => set.clone(),
                };
                (!rest.is_empty()).then(|| (element.clone(), rest))
            })
            .collect();
        Set { members, children }
    }

    /// Every path, members of a node before the paths below it, each group sorted.
    pub(crate) fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect_paths(&mut Vec::new(), &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for member in &self.members {
            let mut path = prefix.clone();
            path.push(member.clone());
            out.push(path);
        }
        for (element, set) in &self.children {
            prefix.push(element.clone());
            set.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` encoding of the set.
    pub(crate) fn to_fields_v1(&self) -> Value {
        Value::Object(self.encode(false))
    }

    fn encode(&self, include_self: bool) -> Map<String, Value> {
        let mut out = Map::new();
        if include_self && !self.is_empty() {
            out.insert(".".to_string(), Value::Object(Map::new()));
        }
        let elements: BTreeSet<&PathElement> =
            self.members.iter().chain(self.children.keys()).collect();
        for element in elements {
            let value = match self.children.get(element) {
                Some(set) => set.encode(self.members.contains(element)),
                None => Map::new(),
            };
            out.insert(element.encode(), Value::Object(value));
        }
        out
    }

    /// Parses a `fieldsV1` value.
    pub(crate) fn from_fields_v1(value: &Value) -> Result<Set, String> {
        let Value::Object(map) = value else {
            return Err(format!("expected an object, got {value}"));
        };
        let mut set = Set::default();
        for (key, child) in map {
            if key == "." {
                continue;
            }
            let element = PathElement::decode(key)?;
            let Value::Object(inner) = child else {
                return Err(format!("expected an object for {key}"));
            };
            if inner.is_empty() || inner.contains_key(".") {
                set.members.insert(element.clone());
            }
            let below = Set::from_fields_v1(child)?;
            if !below.is_empty() {
                set.children.insert(element, below);
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str) -> PathElement {
        PathElement::Field(name.to_string())
    }

    fn key(fields: &[(&str, Value)]) -> PathElement {
        PathElement::Key(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn set_of(paths: &[Path]) -> Set {
        let mut set = Set::default();
        for path in paths {
            set.insert(path);
        }
        set
    }

    fn port() -> PathElement {
        key(&[("containerPort", json!(80)), ("protocol", json!("TCP"))])
    }

    #[test]
    fn fields_v1_round_trip_with_member_marks() {
        let set = set_of(&[
            vec![field("spec"), field("replicas")],
            vec![field("spec"), field("ports"), port()],
            vec![
                field("spec"),
                field("ports"),
                port(),
                field("containerPort"),
            ],
            vec![
                field("metadata"),
                field("finalizers"),
                PathElement::Value(json!("x")),
            ],
        ]);
        let encoded = set.to_fields_v1();
        assert_eq!(
            encoded.to_string(),
            r#"{"f:metadata":{"f:finalizers":{"v:\"x\"":{}}},"f:spec":{"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}},"f:replicas":{}}}"#
        );
        assert_eq!(Set::from_fields_v1(&encoded), Ok(set));
    }

    #[test]
    fn decoding_rejects_unknown_elements() {
        assert!(Set::from_fields_v1(&json!({"x:spec": {}})).is_err());
        assert!(Set::from_fields_v1(&json!({"spec": {}})).is_err());
        assert!(Set::from_fields_v1(&json!({"f:spec": 1})).is_err());
    }

    #[test]
    fn set_algebra() {
        let a = set_of(&[
            vec![field("a")],
            vec![field("b"), field("c")],
            vec![field("b"), field("d")],
        ]);
        let b = set_of(&[vec![field("b"), field("c")], vec![field("e")]]);
        assert_eq!(a.intersection(&b), set_of(&[vec![field("b"), field("c")]]));
        assert_eq!(
            a.difference(&b),
            set_of(&[vec![field("a")], vec![field("b"), field("d")]])
        );
        let union = a.union(&b);
        assert!(union.has(&[field("e")]) && union.has(&[field("b"), field("d")]));
        assert!(!union.has(&[field("b")]));
        let status = set_of(&[vec![field("b")]]);
        assert_eq!(a.recursive_difference(&status), set_of(&[vec![field("a")]]));
        assert_eq!(a.difference(&status), a);
    }

    #[test]
    fn paths_print_like_structured_merge_diff() {
        let path = vec![
            field("spec"),
            field("containers"),
            key(&[("name", json!("web"))]),
            field("image"),
        ];
        assert_eq!(path_string(&path), r#".spec.containers[name="web"].image"#);
        assert_eq!(
            path_string(&[field("x"), PathElement::Value(json!(3))]),
            ".x[=3]"
        );
        assert_eq!(
            path_string(&[port()]),
            r#"[containerPort=80,protocol="TCP"]"#
        );
        let set = set_of(&[
            vec![field("b"), field("c")],
            vec![field("a")],
            vec![field("b")],
        ]);
        let printed: Vec<String> = set.paths().iter().map(|p| path_string(p)).collect();
        assert_eq!(printed, vec![".a", ".b", ".b.c"]);
    }

    #[test]
    fn elements_order_fields_keys_values_indexes() {
        let mut elements = [
            PathElement::Index(0),
            PathElement::Value(json!("a")),
            key(&[("name", json!("a"))]),
            field("z"),
        ];
        elements.sort();
        assert!(matches!(elements[0], PathElement::Field(_)));
        assert!(matches!(elements[3], PathElement::Index(_)));
        assert_eq!(compare_values(&json!(1), &json!(1.0)), Ordering::Equal);
        assert_eq!(compare_values(&json!(2), &json!("1")), Ordering::Less);
        assert!(values_equal(
            &json!({"a": [1, "x"]}),
            &json!({"a": [1.0, "x"]})
        ));
    }
}
