//! Server-side apply (`application/apply-patch+yaml`) and the `metadata.managedFields`
//! bookkeeping of every write, as the apiserver's field manager does them
//! (k8s.io/apimachinery `managedfields` over structured-merge-diff).
//!
//! Each entry of `managedFields` records the fields one manager owns, keyed by manager
//! name, operation (`Apply` or `Update`), API version for updaters, and subresource.
//! [`apply`] merges an applied configuration into the live object, prunes the fields the
//! applier applied before and no longer applies (unless someone else owns them), and
//! refuses to change fields other managers own unless forced. [`track_update`] gives a
//! plain create, update or patch ownership of the fields it changed, taking them from
//! whoever owned them; [`track_status_update`] does the same for the `status`
//! subresource.
//!
//! Like the apiserver, `kubectl` (the manager name of `kubectl apply --server-side`) may
//! take over the fields client-side apply last applied, and keeps the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation in step; an object
//! with no `managedFields` credits its fields to `before-first-apply` on its first
//! apply; and at most ten updaters are kept, the oldest folded into `ancient-changes`.
//!
//! As on a real apiserver, `apiVersion`, `kind`, `metadata.name`, `namespace`, `uid`,
//! `resourceVersion`, `generation`, `creationTimestamp` and `managedFields` are never
//! owned, and `status` is not owned through the main resource of kinds with a status
//! subresource. Objects of one kind have one API version here, so no conversion between
//! versions happens.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::patch::fieldpath::{path_string, values_equal, PathElement, Set};
use crate::patch::schema;
use crate::patch::typed::{self, Comparison, Node};

/// The manager that `apply` credits with the fields of an object that had no
/// `managedFields` before its first apply.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";
/// The manager that absorbs the oldest updaters beyond [`MAX_UPDATE_MANAGERS`].
const ANCIENT_CHANGES: &str = "ancient-changes";
const MAX_UPDATE_MANAGERS: usize = 10;
const APPLY: &str = "Apply";
const UPDATE: &str = "Update";

/// One field another manager owns and an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    pub api_version: String,
    /// The field, as the apiserver prints it: `.spec.replicas`.
    pub field: String,
    /// The owner's operation, `Apply` or `Update`.
    pub operation: String,
    /// The owner's subresource, empty for the main resource.
    pub subresource: String,
}

impl Conflict {
    /// The owner as the apiserver names it: `"kubectl-client-side-apply" using apps/v1`.
    pub fn owner(&self) -> String {
        let mut owner = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            owner.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == UPDATE {
            owner.push_str(&format!(" using {}", self.api_version));
        }
        owner
    }

    /// The message of the conflict's `StatusCause` (type `FieldManagerConflict`).
    pub fn message(&self) -> String {
        format!("conflict with {}", self.owner())
    }
}

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change (HTTP 409).
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The applied configuration is not acceptable (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The configuration or the live object does not fit the kind's schema, or the live
    /// managed fields do not decode (HTTP 500, as the apiserver answers).
    #[error("{0}")]
    Internal(String),
}

impl ApplyError {
    /// The HTTP status code the apiserver answers with.
    pub fn code(&self) -> u16 {
        match self {
            ApplyError::Conflicts(_) => 409,
            ApplyError::Invalid(_) => 400,
            ApplyError::Internal(_) => 500,
        }
    }
}

fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: {}: {}",
            only.message(),
            only.field
        );
    }
    let mut lines = Vec::new();
    let mut owner = None;
    for conflict in conflicts {
        let this = conflict.owner();
        if owner.as_ref() != Some(&this) {
            lines.push(format!("conflicts with {this}:"));
            owner = Some(this);
        }
        lines.push(format!("- {}", conflict.field));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// Applies `applied` (the configuration `manager` sends with
/// `application/apply-patch+yaml`) to `live` (`None` to create), at time `now`
/// (RFC 3339). Returns the object to store, with its `managedFields` updated.
pub fn apply(
    kind: &str,
    api_version: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    check_applied(kind, api_version, applied)?;
    let ctx = Context::new(kind);
    let (live_object, managers) = ctx.live_state(live, applied, api_version, now)?;
    let request = Request {
        applied,
        manager,
        api_version,
        now,
    };
    let object = match ctx.apply_config(&live_object, managers.clone(), &request, force) {
        Ok(object) => object,
        Err(conflicts) => {
            let unexcused = ctx.unexcused(conflicts, &live_object, &request);
            if !unexcused.is_empty() {
                return Err(ApplyError::Conflicts(managers.conflicts(&unexcused)));
            }
            ctx.apply_config(&live_object, managers.clone(), &request, true)
                .map_err(|conflicts| ApplyError::Conflicts(managers.conflicts(&conflicts)))?
        }
    };
    Ok(with_last_applied(object, &request))
}

/// One apply request.
struct Request<'a> {
    applied: &'a Value,
    manager: &'a str,
    api_version: &'a str,
    now: &'a str,
}

/// Conflicting fields, by manager identifier.
type Conflicts = Vec<(String, Set)>;

/// The field manager that migrates client-side apply to server-side apply.
const KUBECTL: &str = "kubectl";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The most bytes all annotations of an object may take.
const ANNOTATIONS_SIZE_LIMIT: usize = 256 * 1024;

/// For `kubectl`, an object that carries client-side apply's last-applied annotation
/// gets it rewritten to the configuration applied now.
fn with_last_applied(mut object: Value, request: &Request) -> Value {
    if request.manager != KUBECTL {
        return object;
    }
    let Some(Value::Object(annotations)) = object.pointer_mut("/metadata/annotations") else {
        return object;
    };
    if annotations
        .get(LAST_APPLIED)
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return object;
    }
    let mut config = request.applied.clone();
    if let Some(Value::Object(own)) = config.pointer_mut("/metadata/annotations") {
        own.shift_remove(LAST_APPLIED);
    }
    annotations.insert(
        LAST_APPLIED.to_string(),
        Value::from(format!("{}\n", sorted_json(&config))),
    );
    let size: usize = annotations
        .iter()
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    if size > ANNOTATIONS_SIZE_LIMIT {
        annotations.shift_remove(LAST_APPLIED);
    }
    object
}

/// Compact JSON with the keys of every map sorted, as Go encodes maps.
fn sorted_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// Records the fields `manager` changed from `old` (`None` on create) to `new` in the
/// `managedFields` of `new`, for a create, update or patch of the main resource with
/// `operation` (`Update`). A `managedFields` the request itself set wins over the live
/// one; `[]` or `[{}]` clears them.
pub fn track_update(
    kind: &str,
    api_version: &str,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    now: &str,
) {
    let ctx = Context::new(kind);
    let id = Identity {
        manager: manager_name(manager),
        operation: operation.to_string(),
        api_version: api_version.to_string(),
        subresource: String::new(),
    };
    let managers = managers_for_update(old, new);
    ctx.track(old, new, managers, &id, now);
}

/// Records the fields `manager` changed through the `status` subresource: the entry has
/// `subresource: status`, and the fields the status endpoint resets (`spec`, and for
/// some kinds a few `metadata` fields) are not owned.
pub fn track_status_update(
    kind: &str,
    api_version: &str,
    old: &Value,
    new: &mut Value,
    manager: &str,
    now: &str,
) {
    let mut ctx = Context::new(kind);
    ctx.ignored = field_set_of(schema::status_reset_fields(kind));
    let id = Identity::update(&manager_name(manager), api_version, "status");
    let managers = Managers::decode(old).unwrap_or_default();
    ctx.track(Some(old), new, Some(managers), &id, now);
}

/// The managers an update starts from: those of the request when it sets valid ones,
/// none when it resets them, the live ones otherwise. `None` when the request resets
/// them on an existing object (which then has no `managedFields`).
fn managers_for_update(old: Option<&Value>, new: &Value) -> Option<Managers> {
    let requested = new.pointer("/metadata/managedFields");
    let reset = match requested {
        Some(Value::Array(entries)) => match entries.as_slice() {
            [] => true,
            [only] => only.as_object().is_some_and(Map::is_empty),
            _ => false,
        },
        _ => false,
    };
    if reset {
        return if old.is_some() {
            None
        } else {
            Some(Managers::default())
        };
    }
    match Managers::decode(new) {
        Ok(managers) if !managers.is_empty() => Some(managers),
        _ => Some(
            old.and_then(|o| Managers::decode(o).ok())
                .unwrap_or_default(),
        ),
    }
}

fn manager_name(manager: &str) -> String {
    if manager.is_empty() {
        "unknown".to_string()
    } else {
        manager.to_string()
    }
}

fn check_applied(kind: &str, api_version: &str, applied: &Value) -> Result<(), ApplyError> {
    let Value::Object(map) = applied else {
        return Err(ApplyError::Invalid(
            "error decoding YAML: the applied configuration is not an object".to_string(),
        ));
    };
    let got_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let got_kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
    if got_version != api_version || got_kind != kind {
        return Err(ApplyError::Invalid(format!(
            "invalid object type: {}",
            gvk_string(got_version, got_kind)
        )));
    }
    if applied
        .pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".to_string(),
        ));
    }
    Ok(())
}

/// A GroupVersionKind as Go prints it: `apps/v1, Kind=Deployment`, `/v1, Kind=Pod`.
fn gvk_string(api_version: &str, kind: &str) -> String {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    format!("{group}/{version}, Kind={kind}")
}

/// `namespace/name; gvk` of an object, for error messages.
fn object_ref(object: &Value, kind: &str, api_version: &str) -> String {
    let field = |name: &str| {
        object
            .pointer(&format!("/metadata/{name}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    format!(
        "{}/{}; {}",
        field("namespace"),
        field("name"),
        gvk_string(api_version, kind)
    )
}

fn without_managed_fields(mut object: Value) -> Value {
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        metadata.shift_remove("managedFields");
    }
    object
}

/// Drops null members of maps, as decoding into typed objects does.
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

fn field_set_of(fields: &[&str]) -> Set {
    let mut set = Set::default();
    for field in fields {
        let path: Vec<PathElement> = field
            .split('.')
            .map(|f| PathElement::Field(f.to_string()))
            .collect();
        set.insert(&path);
    }
    set
}

/// The fields no manager ever owns.
fn unowned_fields() -> Set {
    field_set_of(&[
        "apiVersion",
        "kind",
        "metadata",
        "metadata.name",
        "metadata.namespace",
        "metadata.creationTimestamp",
        "metadata.selfLink",
        "metadata.uid",
        "metadata.clusterName",
        "metadata.generation",
        "metadata.managedFields",
        "metadata.resourceVersion",
    ])
}

/// Who a managed-fields entry belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Identity {
    manager: String,
    operation: String,
    api_version: String,
    subresource: String,
}

impl Identity {
    fn apply(manager: &str, api_version: &str) -> Identity {
        Identity {
            manager: manager_name(manager),
            operation: APPLY.to_string(),
            api_version: api_version.to_string(),
            subresource: String::new(),
        }
    }

    fn update(manager: &str, api_version: &str, subresource: &str) -> Identity {
        Identity {
            manager: manager.to_string(),
            operation: UPDATE.to_string(),
            api_version: api_version.to_string(),
            subresource: subresource.to_string(),
        }
    }

    /// The apiserver's manager identifier: the entry without fields and time, and without
    /// the API version for appliers, as JSON.
    fn key(&self) -> String {
        let mut map = Map::new();
        let mut put = |name: &str, value: &str| {
            if !value.is_empty() {
                map.insert(name.to_string(), Value::from(value));
            }
        };
        put("manager", &self.manager);
        put("operation", &self.operation);
        if self.operation != APPLY {
            put("apiVersion", &self.api_version);
        }
        put("subresource", &self.subresource);
        Value::Object(map).to_string()
    }
}

/// One `managedFields` entry.
#[derive(Clone, Debug)]
struct Entry {
    who: Identity,
    time: Option<String>,
    set: Set,
}

impl Entry {
    fn decode(index: usize, value: &Value) -> Result<Entry, String> {
        let text = |name: &str| {
            value
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let operation = text("operation");
        if operation != APPLY && operation != UPDATE {
            return Err("operation must be `Apply` or `Update`".to_string());
        }
        let api_version = text("apiVersion");
        if api_version.is_empty() {
            return Err("apiVersion must not be empty".to_string());
        }
        match text("fieldsType").as_str() {
            "FieldsV1" => {}
            "" => {
                return Err(format!(
                    "missing fieldsType in managed fields entry {index}"
                ))
            }
            other => {
                return Err(format!(
                    "invalid fieldsType {other:?} in managed fields entry {index}"
                ))
            }
        }
        let set = match value.get("fieldsV1") {
            None | Some(Value::Null) => Set::default(),
            Some(fields) => {
                Set::from_fields_v1(fields).map_err(|err| format!("error decoding set: {err}"))?
            }
        };
        let time = value
            .get("time")
            .and_then(Value::as_str)
            .map(str::to_string);
        let who = Identity {
            manager: text("manager"),
            operation,
            api_version,
            subresource: text("subresource"),
        };
        Ok(Entry { who, time, set })
    }

    fn encode(&self) -> Value {
        let mut map = Map::new();
        if !self.who.manager.is_empty() {
            map.insert(
                "manager".to_string(),
                Value::from(self.who.manager.as_str()),
            );
        }
        map.insert(
            "operation".to_string(),
            Value::from(self.who.operation.as_str()),
        );
        map.insert(
            "apiVersion".to_string(),
            Value::from(self.who.api_version.as_str()),
        );
        if let Some(time) = &self.time {
            map.insert("time".to_string(), Value::from(time.as_str()));
        }
        map.insert("fieldsType".to_string(), Value::from("FieldsV1"));
        map.insert("fieldsV1".to_string(), self.set.to_fields_v1());
        if !self.who.subresource.is_empty() {
            map.insert(
                "subresource".to_string(),
                Value::from(self.who.subresource.as_str()),
            );
        }
        Value::Object(map)
    }

    fn seconds(&self) -> i64 {
        self.time
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or(0, |t| t.timestamp())
    }
}

/// The entries of an object's `managedFields`, by manager identifier.
#[derive(Clone, Debug, Default)]
struct Managers(BTreeMap<String, Entry>);

impl Managers {
    fn decode(object: &Value) -> Result<Managers, String> {
        let entries = match object.pointer("/metadata/managedFields") {
            None | Some(Value::Null) => return Ok(Managers::default()),
            Some(Value::Array(entries)) => entries,
            Some(_) => return Err("managedFields must be a list".to_string()),
        };
        let mut managers = Managers::default();
        for (index, value) in entries.iter().enumerate() {
            let entry = Entry::decode(index, value)?;
            managers.0.insert(entry.who.key(), entry);
        }
        Ok(managers)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Writes the entries into `object`'s metadata, sorted as the apiserver sorts them
    /// (operation, time, manager, API version, subresource), or removes the field.
    fn encode_into(&self, object: &mut Value) {
        let Value::Object(root) = object else {
            return;
        };
        let metadata = root
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(metadata) = metadata else {
            return;
        };
        if self.is_empty() {
            metadata.shift_remove("managedFields");
            return;
        }
        let mut entries: Vec<&Entry> = self.0.values().collect();
        entries.sort_by(|a, b| {
            (
                &a.who.operation,
                a.seconds(),
                &a.who.manager,
                &a.who.api_version,
                &a.who.subresource,
            )
                .cmp(&(
                    &b.who.operation,
                    b.seconds(),
                    &b.who.manager,
                    &b.who.api_version,
                    &b.who.subresource,
                ))
        });
        let encoded = entries.into_iter().map(Entry::encode).collect();
        metadata.insert("managedFields".to_string(), Value::Array(encoded));
    }

    /// Gives the applier `set`, keeping the time of its previous entry.
    fn set_applied(&mut self, id: &str, manager: &str, api_version: &str, set: Set) {
        let time = self.0.get(id).and_then(|e| e.time.clone());
        let who = Identity::apply(manager, api_version);
        self.0.insert(id.to_string(), Entry { who, time, set });
    }

    fn touch(&mut self, id: &str, now: &str) {
        if let Some(entry) = self.0.get_mut(id) {
            entry.time = Some(now.to_string());
        }
    }

    /// Removes the never-owned fields from one manager's set.
    fn strip_meta(&mut self, id: &str) {
        if let Some(entry) = self.0.get_mut(id) {
            entry.set = entry.set.difference(&unowned_fields());
            if entry.set.is_empty() {
                self.0.remove(id);
            }
        }
    }

    /// The union of every manager's fields.
    fn all_fields(&self) -> Set {
        self.0
            .values()
            .fold(Set::default(), |all, entry| all.union(&entry.set))
    }

    fn conflicts(&self, by_manager: &Conflicts) -> Vec<Conflict> {
        let mut out = Vec::new();
        for (id, set) in by_manager {
            let Some(entry) = self.0.get(id) else {
                continue;
            };
            for path in set.paths() {
                out.push(Conflict {
                    manager: entry.who.manager.clone(),
                    api_version: entry.who.api_version.clone(),
                    field: path_string(&path),
                    operation: entry.who.operation.clone(),
                    subresource: entry.who.subresource.clone(),
                });
            }
        }
        out
    }

    /// Folds the oldest updaters into one `ancient-changes` entry per API version when
    /// there are more than [`MAX_UPDATE_MANAGERS`].
    fn cap_updaters(&mut self) {
        let mut updaters: Vec<(i64, String)> = self
            .0
            .iter()
            .filter(|(_, e)| e.who.operation != APPLY)
            .map(|(id, e)| (e.seconds(), id.clone()))
            .collect();
        if updaters.len() <= MAX_UPDATE_MANAGERS {
            return;
        }
        updaters.sort();
        let mut remaining = updaters.len();
        let mut first_by_version: BTreeMap<String, String> = BTreeMap::new();
        for (_, id) in updaters {
            if remaining <= MAX_UPDATE_MANAGERS {
                break;
            }
            let Some(entry) = self.0.get(&id).cloned() else {
                continue;
            };
            let version = entry.who.api_version.clone();
            let Some(first) = first_by_version.get(&version) else {
                first_by_version.insert(version, id);
                continue;
            };
            let bucket = Identity::update(ANCIENT_CHANGES, &version, "");
            let key = bucket.key();
            if !self.0.contains_key(&key) {
                if let Some(moved) = self.0.remove(first) {
                    self.0.insert(
                        key.clone(),
                        Entry {
                            who: bucket,
                            ..moved
                        },
                    );
                }
            }
            self.0.remove(&id);
            if let Some(target) = self.0.get_mut(&key) {
                target.set = entry.set.union(&target.set);
                target.time = entry.time;
            }
            remaining -= 1;
        }
    }
}

/// The schema and the fields a write through this endpoint cannot own.
struct Context<'a> {
    kind: &'a str,
    node: Node,
    ignored: Set,
}

impl<'a> Context<'a> {
    fn new(kind: &'a str) -> Context<'a> {
        let ignored = if schema::has_status_subresource(kind) {
            field_set_of(&["status"])
        } else {
            Set::default()
        };
        Context {
            kind,
            node: Node::root(kind),
            ignored,
        }
    }

    /// The live object of an apply (an empty one on create) without its managed fields,
    /// and its managers; an object never applied to nor tracked before has its fields
    /// credited to `before-first-apply`.
    fn live_state(
        &self,
        live: Option<&Value>,
        applied: &Value,
        api_version: &str,
        now: &str,
    ) -> Result<(Value, Managers), ApplyError> {
        let typed_error = |what: &str, object: &Value, err: String| {
            let object = object_ref(object, self.kind, api_version);
            ApplyError::Internal(format!(
                "failed to create typed {what} object ({object}): {err}"
            ))
        };
        typed::validate(applied, self.node, false).map_err(|e| typed_error("patch", applied, e))?;
        let live_object = live
            .cloned()
            .unwrap_or_else(|| schema::empty_object(self.kind));
        typed::validate(&live_object, self.node, true)
            .map_err(|e| typed_error("live", &live_object, e))?;
        let mut managers = Managers::decode(&live_object).map_err(|err| {
            ApplyError::Internal(format!("failed to decode managed fields: {err}"))
        })?;
        let live_object = without_managed_fields(live_object);
        if managers.is_empty() && live.is_some() {
            let first = Identity::update(BEFORE_FIRST_APPLY, api_version, "");
            let empty = schema::empty_object(self.kind);
            self.record_update(&empty, &live_object, &mut managers, &first, now);
        }
        Ok((live_object, managers))
    }

    /// One attempt at an apply: the object to store with its managed fields, or the
    /// fields that conflict.
    fn apply_config(
        &self,
        live: &Value,
        mut managers: Managers,
        request: &Request,
        force: bool,
    ) -> Result<Value, Conflicts> {
        let config = self.without_reset_fields(request.applied);
        let id = Identity::apply(request.manager, request.api_version).key();
        let last = managers.0.get(&id).map(|entry| entry.set.clone());
        let set = typed::field_set(&config, self.node).recursive_difference(&self.ignored);
        managers.set_applied(&id, request.manager, request.api_version, set);
        let merged = typed::merge(live, &config, self.node);
        let merged = self.prune(merged, &managers, last.as_ref());
        self.update(live, &merged, &mut managers, &id, force)?;
        managers.strip_meta(&id);
        let mut object = if values_equal(live, &merged) {
            live.clone()
        } else {
            managers.touch(&id, request.now);
            without_nulls(merged)
        };
        managers.encode_into(&mut object);
        Ok(object)
    }

    /// The conflicts `kubectl` may not override: those outside the fields client-side
    /// apply last applied with the values they still have.
    fn unexcused(&self, conflicts: Conflicts, live: &Value, request: &Request) -> Conflicts {
        if request.manager != KUBECTL {
            return conflicts;
        }
        let Some(allowed) = self.last_applied_fields(live, request.api_version) else {
            return conflicts;
        };
        conflicts
            .into_iter()
            .map(|(id, set)| (id, set.difference(&allowed)))
            .filter(|(_, set)| !set.is_empty())
            .collect()
    }

    /// The fields of the live object's last-applied annotation whose values are still live.
    fn last_applied_fields(&self, live: &Value, api_version: &str) -> Option<Set> {
        let text = live
            .get("metadata")?
            .get("annotations")?
            .get(LAST_APPLIED)?
            .as_str()?;
        let last: Value = serde_json::from_str(text).ok()?;
        if last.get("apiVersion").and_then(Value::as_str) != Some(api_version) {
            return None;
        }
        typed::validate(&last, self.node, false).ok()?;
        typed::validate(live, self.node, false).ok()?;
        let changed = typed::compare(&last, live, self.node);
        let fields = typed::field_set(&last, self.node);
        Some(
            fields
                .difference(&changed.modified)
                .difference(&changed.added)
                .difference(&changed.removed),
        )
    }

    /// The applied configuration without the fields the endpoint resets (`status`).
    fn without_reset_fields(&self, applied: &Value) -> Value {
        let mut config = applied.clone();
        if let Value::Object(map) = &mut config {
            for path in self.ignored.paths() {
                if let [PathElement::Field(name)] = path.as_slice() {
                    map.shift_remove(name);
                }
            }
        }
        config
    }

    /// Compares `old` and `new` and takes the changed fields from every manager but
    /// `workflow`; with conflicts and no `force`, returns the conflicting fields by manager.
    fn update(
        &self,
        old: &Value,
        new: &Value,
        managers: &mut Managers,
        workflow: &str,
        force: bool,
    ) -> Result<Comparison, Conflicts> {
        let comparison = typed::compare(old, new, self.node).excluding(&self.ignored);
        let changed = comparison.modified.union(&comparison.added);
        let conflicts: Conflicts = managers
            .0
            .iter()
            .filter(|(id, _)| id.as_str() != workflow)
            .map(|(id, entry)| (id.clone(), entry.set.intersection(&changed)))
            .filter(|(_, set)| !set.is_empty())
            .collect();
        if !force && !conflicts.is_empty() {
            return Err(conflicts);
        }
        for (id, entry) in managers.0.iter_mut() {
            if id.as_str() != workflow {
                entry.set = entry
                    .set
                    .difference(&changed)
                    .difference(&comparison.removed);
            }
        }
        managers.0.retain(|_, entry| !entry.set.is_empty());
        Ok(comparison)
    }

    /// Removes from `merged` the fields the applier applied last time (`last`) that no
    /// manager owns now.
    fn prune(&self, merged: Value, managers: &Managers, last: Option<&Set>) -> Value {
        let Some(last) = last.filter(|set| !set.is_empty()) else {
            return merged;
        };
        let named = |set: &Set| typed::with_named_fields(set, self.node);
        let fields = |value: &Value| named(&typed::field_set(value, self.node));
        let last = named(last);
        let merged_fields = fields(&merged);
        let pruned = typed::remove_items(&merged, &last, self.node);
        let kept = fields(&pruned).union(&named(&managers.all_fields()));
        let owned_back = typed::remove_items(&merged, &merged_fields.difference(&kept), self.node);
        let dangling = merged_fields
            .difference(&fields(&owned_back))
            .intersection(&last);
        typed::remove_items(&merged, &dangling, self.node)
    }

    /// Credits `id` with the fields changed from `old` to `new`, taking them from their
    /// previous owners; an unchanged object leaves every entry as it was.
    fn record_update(
        &self,
        old: &Value,
        new: &Value,
        managers: &mut Managers,
        id: &Identity,
        now: &str,
    ) {
        const CURRENT: &str = "current-operation";
        let Ok(comparison) = self.update(old, new, managers, CURRENT, true) else {
            return;
        };
        let changed = comparison
            .modified
            .union(&comparison.added)
            .recursive_difference(&self.ignored)
            .difference(&unowned_fields());
        if changed.is_empty() {
            return;
        }
        let key = id.key();
        let set = match managers.0.get(&key) {
            Some(previous) => changed.union(&previous.set),
            None => changed,
        };
        let entry = Entry {
            who: id.clone(),
            time: Some(now.to_string()),
            set,
        };
        managers.0.insert(key, entry);
    }

    /// The managed-fields tracking of a create, update or patch.
    fn track(
        &self,
        old: Option<&Value>,
        new: &mut Value,
        managers: Option<Managers>,
        id: &Identity,
        now: &str,
    ) {
        let live_fields = old
            .and_then(|o| o.pointer("/metadata/managedFields"))
            .cloned();
        let mut managers = match managers {
            Some(managers) if !(managers.is_empty() && old.is_some()) => managers,
            _ => {
                Managers::default().encode_into(new);
                return;
            }
        };
        let old_object = old
            .cloned()
            .map_or_else(|| schema::empty_object(self.kind), without_managed_fields);
        let new_object = without_managed_fields(new.clone());
        let valid = typed::validate(&old_object, self.node, true)
            .and_then(|()| typed::validate(&new_object, self.node, true));
        if valid.is_err() {
            restore_managed_fields(new, live_fields);
            return;
        }
        self.record_update(&old_object, &new_object, &mut managers, id, now);
        managers.cap_updaters();
        managers.encode_into(new);
    }
}

/// Puts the live object's `managedFields` back on `new`, as the apiserver does when
/// tracking fails.
fn restore_managed_fields(new: &mut Value, live: Option<Value>) {
    if let Some(Value::Object(metadata)) = new.get_mut("metadata") {
        match live {
            Some(fields) => {
                metadata.insert("managedFields".to_string(), fields);
            }
            None => {
                metadata.shift_remove("managedFields");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T0: &str = "2024-05-01T10:00:00Z";
    const T1: &str = "2024-05-01T11:00:00Z";
    const T2: &str = "2024-05-01T12:00:00Z";

    fn config(replicas: Option<i64>, labels: Value, containers: Value) -> Value {
        let mut spec = json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}
        });
        if let Some(replicas) = replicas {
            spec["replicas"] = json!(replicas);
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": labels},
            "spec": spec
        })
    }

    fn web() -> Value {
        json!([{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}])
    }

    fn apply_as(
        live: Option<&Value>,
        applied: &Value,
        manager: &str,
        force: bool,
        now: &str,
    ) -> Result<Value, ApplyError> {
        apply("Deployment", "apps/v1", live, applied, manager, force, now)
    }

    /// The `(manager, operation, time)` of each entry, in stored order.
    fn entries(object: &Value) -> Vec<(String, String, String)> {
        let entries = object
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array);
        entries
            .into_iter()
            .flatten()
            .map(|e| {
                let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                (text("manager"), text("operation"), text("time"))
            })
            .collect()
    }

    fn fields_of(object: &Value, manager: &str, operation: &str) -> Value {
        let entries = object
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array);
        entries
            .into_iter()
            .flatten()
            .find(|e| e["manager"] == manager && e["operation"] == operation)
            .map_or(Value::Null, |e| e["fieldsV1"].clone())
    }

    fn entry(manager: &str, operation: &str, time: &str) -> (String, String, String) {
        (manager.to_string(), operation.to_string(), time.to_string())
    }

    #[test]
    fn apply_creates_and_records_the_applied_fields() {
        let created = apply_as(
            None,
            &config(Some(2), json!({"app": "web"}), web()),
            "kubectl",
            false,
            T0,
        )
        .unwrap();
        assert_eq!(created["spec"]["replicas"], json!(2));
        assert_eq!(created["spec"]["template"]["spec"]["containers"], web());
        assert!(created.pointer("/metadata/creationTimestamp").is_none());
        assert_eq!(entries(&created), vec![entry("kubectl", "Apply", T0)]);
        assert_eq!(
            fields_of(&created, "kubectl", "Apply"),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {}, "f:image": {}, "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
        let encoded = &created["metadata"]["managedFields"][0];
        assert_eq!(encoded["apiVersion"], "apps/v1");
        assert_eq!(encoded["fieldsType"], "FieldsV1");
    }

    #[test]
    fn reapplying_the_same_configuration_changes_nothing() {
        let applied = config(Some(2), json!({"app": "web"}), web());
        let created = apply_as(None, &applied, "kubectl", false, T0).unwrap();
        let again = apply_as(Some(&created), &applied, "kubectl", false, T1).unwrap();
        assert_eq!(again, created);
        assert_eq!(entries(&again), vec![entry("kubectl", "Apply", T0)]);
    }

    #[test]
    fn fields_no_longer_applied_are_removed() {
        let two_ports = json!([{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}, {"containerPort": 443}]}]);
        let created = apply_as(
            None,
            &config(Some(2), json!({"app": "web", "tier": "fe"}), two_ports),
            "kubectl",
            false,
            T0,
        )
        .unwrap();
        let applied = config(None, json!({"app": "web"}), web());
        let updated = apply_as(Some(&created), &applied, "kubectl", false, T1).unwrap();
        assert!(updated.pointer("/spec/replicas").is_none());
        assert_eq!(updated["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(updated["spec"]["template"]["spec"]["containers"], web());
        assert_eq!(entries(&updated), vec![entry("kubectl", "Apply", T1)]);
        assert!(fields_of(&updated, "kubectl", "Apply")["f:spec"]
            .get("f:replicas")
            .is_none());
    }

    #[test]
    fn fields_of_another_manager_are_kept() {
        let created = apply_as(
            None,
            &config(Some(2), json!({"app": "web"}), web()),
            "alice",
            false,
            T0,
        )
        .unwrap();
        let bob = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"team": "b", "app": "web"}},
        });
        let shared = apply_as(Some(&created), &bob, "bob", false, T1).unwrap();
        assert_eq!(
            shared["metadata"]["labels"],
            json!({"app": "web", "team": "b"})
        );
        let alice_again = config(Some(3), json!({}), web());
        let after = apply_as(Some(&shared), &alice_again, "alice", false, T2).unwrap();
        assert_eq!(
            after["metadata"]["labels"],
            json!({"app": "web", "team": "b"}),
            "bob still applies both labels"
        );
        assert_eq!(
            entries(&after),
            vec![entry("bob", "Apply", T1), entry("alice", "Apply", T2)]
        );
        assert_eq!(
            fields_of(&after, "bob", "Apply"),
            json!({"f:metadata": {"f:labels": {"f:app": {}, "f:team": {}}}})
        );
    }

    fn created_by_client_side_apply() -> Value {
        let mut object = config(Some(2), json!({"app": "web"}), web());
        track_update(
            "Deployment",
            "apps/v1",
            None,
            &mut object,
            "kubectl-client-side-apply",
            "Update",
            T0,
        );
        object
    }

    #[test]
    fn changing_a_field_another_manager_owns_conflicts() {
        let live = created_by_client_side_apply();
        let err = apply_as(
            Some(&live),
            &config(Some(3), json!({"app": "web"}), web()),
            "kubectl",
            false,
            T1,
        )
        .unwrap_err();
        assert_eq!(err.code(), 409);
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        let ApplyError::Conflicts(conflicts) = err else {
            panic!("expected conflicts");
        };
        assert_eq!(
            conflicts,
            vec![Conflict {
                manager: "kubectl-client-side-apply".into(),
                api_version: "apps/v1".into(),
                field: ".spec.replicas".into(),
                operation: "Update".into(),
                subresource: String::new(),
            }]
        );
        assert_eq!(
            conflicts[0].message(),
            "conflict with \"kubectl-client-side-apply\" using apps/v1"
        );
    }

    #[test]
    fn applying_the_same_values_shares_ownership_without_conflict() {
        let live = created_by_client_side_apply();
        let shared = apply_as(
            Some(&live),
            &config(Some(2), json!({"app": "web"}), web()),
            "kubectl",
            false,
            T1,
        )
        .unwrap();
        assert_eq!(
            fields_of(&shared, "kubectl-client-side-apply", "Update")["f:spec"]["f:replicas"],
            json!({})
        );
        assert_eq!(
            fields_of(&shared, "kubectl", "Apply")["f:spec"]["f:replicas"],
            json!({})
        );
    }

    #[test]
    fn forcing_moves_ownership() {
        let live = created_by_client_side_apply();
        let forced = apply_as(
            Some(&live),
            &config(Some(3), json!({"app": "web"}), web()),
            "kubectl",
            true,
            T1,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], json!(3));
        assert!(
            fields_of(&forced, "kubectl-client-side-apply", "Update")["f:spec"]
                .get("f:replicas")
                .is_none()
        );
        assert_eq!(
            fields_of(&forced, "kubectl", "Apply")["f:spec"]["f:replicas"],
            json!({})
        );
    }

    #[test]
    fn kubectl_takes_over_what_client_side_apply_last_applied() {
        let mut live = config(Some(2), json!({"app": "web"}), web());
        let last_applied = format!("{}\n", sorted_json(&live));
        live["metadata"]["annotations"] = json!({ LAST_APPLIED: last_applied });
        track_update(
            "Deployment",
            "apps/v1",
            None,
            &mut live,
            "kubectl-client-side-apply",
            "Update",
            T0,
        );
        let mut scaled = live.clone();
        scaled["spec"]["template"]["spec"]["containers"][0]["image"] = json!("httpd");
        track_update(
            "Deployment",
            "apps/v1",
            Some(&live),
            &mut scaled,
            "kubectl-edit",
            "Update",
            T0,
        );

        let applied = config(Some(3), json!({"app": "web"}), web());
        let migrated = apply_as(Some(&live), &applied, "kubectl", false, T1).unwrap();
        assert_eq!(migrated["spec"]["replicas"], json!(3));
        assert_eq!(
            migrated["metadata"]["annotations"][LAST_APPLIED],
            json!(format!("{}\n", sorted_json(&applied)))
        );
        assert_eq!(
            fields_of(&migrated, "kubectl", "Apply")["f:spec"]["f:replicas"],
            json!({})
        );
        let client_side = fields_of(&migrated, "kubectl-client-side-apply", "Update");
        assert!(client_side["f:spec"].get("f:replicas").is_none());

        let other = apply_as(Some(&live), &applied, "other", false, T1).unwrap_err();
        assert_eq!(other.code(), 409);
        let edited = apply_as(Some(&scaled), &applied, "kubectl", false, T1).unwrap_err();
        assert_eq!(
            edited.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn several_conflicts_are_listed_by_manager() {
        let live = created_by_client_side_apply();
        let changed = json!([{"name": "web", "image": "httpd", "ports": [{"containerPort": 80}]}]);
        let err = apply_as(
            Some(&live),
            &config(Some(3), json!({"app": "web"}), changed),
            "kubectl",
            false,
            T1,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
        );
    }

    #[test]
    fn updates_record_changed_fields_with_member_marks() {
        let object = created_by_client_side_apply();
        assert_eq!(
            entries(&object),
            vec![entry("kubectl-client-side-apply", "Update", T0)]
        );
        assert_eq!(
            fields_of(&object, "kubectl-client-side-apply", "Update"),
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {}, "f:image": {}, "f:name": {},
                            "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn updates_take_fields_from_previous_owners() {
        let old = created_by_client_side_apply();
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        new["metadata"]["resourceVersion"] = json!("7");
        track_update(
            "Deployment",
            "apps/v1",
            Some(&old),
            &mut new,
            "kube-controller-manager",
            "Update",
            T1,
        );
        assert_eq!(
            entries(&new),
            vec![
                entry("kubectl-client-side-apply", "Update", T0),
                entry("kube-controller-manager", "Update", T1)
            ]
        );
        assert_eq!(
            fields_of(&new, "kube-controller-manager", "Update"),
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert!(
            fields_of(&new, "kubectl-client-side-apply", "Update")["f:spec"]
                .get("f:replicas")
                .is_none()
        );
    }

    #[test]
    fn unchanged_updates_leave_managed_fields_alone() {
        let old = created_by_client_side_apply();
        let mut new = old.clone();
        new["status"] = json!({"replicas": 2});
        track_update(
            "Deployment",
            "apps/v1",
            Some(&old),
            &mut new,
            "other",
            "Update",
            T1,
        );
        assert_eq!(
            new["metadata"]["managedFields"],
            old["metadata"]["managedFields"]
        );
    }

    #[test]
    fn requests_can_reset_managed_fields() {
        let old = created_by_client_side_apply();
        for reset in [json!([]), json!([{}])] {
            let mut new = old.clone();
            new["metadata"]["managedFields"] = reset;
            new["spec"]["replicas"] = json!(4);
            track_update(
                "Deployment",
                "apps/v1",
                Some(&old),
                &mut new,
                "kubectl-edit",
                "Update",
                T1,
            );
            assert!(new.pointer("/metadata/managedFields").is_none());
        }
    }

    #[test]
    fn status_updates_are_owned_through_the_subresource() {
        let old = created_by_client_side_apply();
        let mut new = old.clone();
        new["status"] = json!({"readyReplicas": 2});
        new["spec"]["replicas"] = json!(9);
        track_status_update(
            "Deployment",
            "apps/v1",
            &old,
            &mut new,
            "kube-controller-manager",
            T1,
        );
        let status_entry = new["metadata"]["managedFields"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["subresource"] == "status"))
            .cloned();
        assert_eq!(
            status_entry.map(|e| (e["manager"].clone(), e["fieldsV1"].clone())),
            Some((
                json!("kube-controller-manager"),
                json!({"f:status": {".": {}, "f:readyReplicas": {}}})
            ))
        );
    }

    #[test]
    fn apply_neither_changes_nor_owns_status() {
        let mut applied = config(Some(1), json!({"app": "web"}), web());
        applied["status"] = json!({"replicas": 7});
        let created = apply_as(None, &applied, "kubectl", false, T0).unwrap();
        assert_eq!(created["status"], json!({}));
        assert!(fields_of(&created, "kubectl", "Apply")
            .get("f:status")
            .is_none());
    }

    #[test]
    fn first_apply_to_an_unmanaged_object_credits_existing_fields() {
        let live = config(Some(2), json!({"app": "web"}), web());
        let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let err = apply_as(Some(&live), &applied, "kubectl", false, T1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn invalid_applied_configurations() {
        let check = |applied: Value, code: u16, message: &str| {
            let err = apply_as(None, &applied, "kubectl", false, T0).unwrap_err();
            assert_eq!((err.code(), err.to_string()), (code, message.to_string()));
        };
        let mut wrong_kind = config(None, json!({}), web());
        wrong_kind["kind"] = json!("ReplicaSet");
        check(
            wrong_kind,
            400,
            "invalid object type: apps/v1, Kind=ReplicaSet",
        );
        let mut managed = config(None, json!({}), web());
        managed["metadata"]["managedFields"] = json!([]);
        check(managed, 400, "metadata.managedFields must be nil");
        check(
            config(None, json!({}), json!([{"name": "a"}, {"name": "a"}])),
            500,
            "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): .spec.template.spec.containers: duplicate entries for key [name=\"a\"]",
        );
    }

    #[test]
    fn oldest_updaters_fold_into_ancient_changes() {
        let mut object =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
        track_update(
            "ConfigMap",
            "v1",
            None,
            &mut object,
            "creator",
            "Update",
            "2024-05-01T00:00:00Z",
        );
        for i in 0..11 {
            let old = object.clone();
            object["data"][format!("k{i}")] = json!("v");
            let now = format!("2024-05-01T00:{:02}:00Z", i + 1);
            track_update(
                "ConfigMap",
                "v1",
                Some(&old),
                &mut object,
                &format!("m{i:02}"),
                "Update",
                &now,
            );
        }
        let managers: Vec<String> = entries(&object).into_iter().map(|(m, _, _)| m).collect();
        assert_eq!(managers.len(), 10);
        assert_eq!(managers[0], "ancient-changes");
        assert_eq!(
            fields_of(&object, "ancient-changes", "Update"),
            json!({"f:data": {".": {}, "f:k0": {}, "f:k1": {}}})
        );
    }
}
