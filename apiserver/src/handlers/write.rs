//! create, update, patch, delete and deletecollection, plus the `scale` and `binding`
//! subresources. Each request is one store transaction: it validates, allocates and
//! writes together or not at all.

use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::{json_response, respond, success_status, Call};
use crate::error::{ApiError, Result};
use crate::kinds;
use crate::objects::{self, meta_mut};
use crate::resources::{self, Resource};
use crate::store::Txn;
use crate::AppState;

/// How unknown fields in a request are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// What a write needs besides the object.
pub struct WriteCtx<'a> {
    pub state: &'a AppState,
    pub res: &'static Resource,
    pub manager: String,
    pub validation: FieldValidation,
    pub dry_run: bool,
    /// Whether managedFields are recorded as an `Update` by `manager` (apply records its own).
    pub track: bool,
    /// Whether a create refuses an object carrying a resourceVersion, as a POST does
    /// (apply and the server's own writes drop it).
    pub refuse_resource_version: bool,
    pub warnings: Vec<String>,
}

impl<'a> WriteCtx<'a> {
    fn new(call: &'a Call) -> Result<Self> {
        let validation = match call.params.get("fieldValidation") {
            None | Some("Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some("Strict") => FieldValidation::Strict,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation parameter unsupported: {other}. Valid values are Ignore, Warn, Strict"
                )))
            }
        };
        Ok(WriteCtx {
            state: &call.state,
            res: call.res(),
            manager: call.manager(),
            validation,
            dry_run: call.params.dry_run(),
            track: true,
            refuse_resource_version: false,
            warnings: Vec::new(),
        })
    }

    /// Decodes `obj` as its type and applies the field validation mode.
    fn decode(&mut self, obj: &Value) -> Result<()> {
        let kind = self.res.kind;
        let unknown = objects::decode(self.res, obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{kind} in version \"{}\" cannot be handled as a {kind}: {e}",
                self.res.version
            ))
        })?;
        if unknown.is_empty() {
            return Ok(());
        }
        match self.validation {
            FieldValidation::Ignore => Ok(()),
            FieldValidation::Warn => {
                self.warnings
                    .extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
                Ok(())
            }
            FieldValidation::Strict => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                Err(ApiError::bad_request(format!(
                    "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
                    self.res.version,
                    list.join(", ")
                )))
            }
        }
    }

    fn store(&self, txn: &mut Txn<'_>, key: &str, obj: Value) -> Value {
        if self.dry_run {
            obj
        } else {
            txn.put(key, obj)
        }
    }

    fn respond(&self, call: &Call, code: u16, obj: Value) -> Response {
        with_warnings(respond(call, code, obj), &self.warnings)
    }
}

fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            response.headers_mut().append("warning", v);
        }
    }
    response
}

/// Refuses a body whose apiVersion or kind is not this resource's.
fn check_type(res: &Resource, obj: &Value) -> Result<()> {
    if let Some(v) = obj.get("apiVersion").and_then(Value::as_str) {
        if v != res.api_version() {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({})",
                res.api_version()
            )));
        }
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str) {
        if k != res.kind {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )));
        }
    }
    Ok(())
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn invalid(res: &Resource, obj: &Value, errors: Vec<api::field::FieldError>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(res, objects::name(obj), &errors))
    }
}

fn now() -> String {
    objects::now_rfc3339()
}

/// Creates `obj` in `namespace` inside `txn`.
pub fn create_in(
    ctx: &mut WriteCtx<'_>,
    txn: &mut Txn<'_>,
    namespace: Option<&str>,
    mut obj: Value,
) -> Result<Value> {
    let res = ctx.res;
    check_type(res, &obj)?;
    objects::stamp_type(res, &mut obj);
    let meta = meta_mut(&mut obj);
    if res.namespaced {
        match (meta.get("namespace").and_then(Value::as_str), namespace) {
            (Some(given), Some(url)) if !given.is_empty() && given != url => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ))
            }
            _ => {}
        }
        meta.insert("namespace".into(), json!(namespace.unwrap_or("default")));
    } else {
        meta.remove("namespace");
    }
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // Storage refuses an object that claims a revision; one that does not parse as a
    // revision, or "0", is let through and dropped.
    let claims_revision = meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse::<u64>().ok())
        .is_some_and(|rv| rv != 0);
    if name.is_empty() {
        if let Some(prefix) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
        {
            let generated = format!("{prefix}{}", random_suffix());
            meta.insert("name".into(), json!(generated));
        }
    }
    for field in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(field);
    }
    if ctx.track {
        meta.remove("managedFields");
    }
    api::defaults::apply_defaults(res.kind, &mut obj);
    ctx.decode(&obj)?;
    kinds::reset_for_create(res, &mut obj);
    let ns = objects::namespace(&obj).map(str::to_string);
    if let Some(ns) = &ns {
        kinds::check_namespace_open(txn, res, ns)?;
    }
    let name = objects::name(&obj).to_string();
    let key = res.key(ns.as_deref(), &name);
    if claims_revision && ctx.refuse_resource_version && !ctx.dry_run {
        return Err(ApiError::unknown(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    if txn.get(&key)?.is_some() {
        return Err(ApiError::already_exists(res, &name));
    }
    kinds::admit_create(txn, res, &mut obj)?;
    kinds::allocate(ctx.state, txn, res, &mut obj, None)?;
    invalid(res, &obj, api::validation::validate_create(res.kind, &obj))?;
    let meta = meta_mut(&mut obj);
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    if res.tracks_generation() {
        meta.insert("generation".into(), json!(1));
    }
    if ctx.track {
        api::apply::track_update(
            res.kind,
            &res.api_version(),
            None,
            &mut obj,
            &ctx.manager,
            "Update",
            &now(),
        );
    }
    Ok(ctx.store(txn, &key, obj))
}

/// Replaces `old` by `new` inside `txn`; `sub` is the subresource written through.
pub fn update_in(
    ctx: &mut WriteCtx<'_>,
    txn: &mut Txn<'_>,
    sub: Option<&str>,
    old: Value,
    mut new: Value,
) -> Result<Value> {
    let res = ctx.res;
    check_type(res, &new)?;
    objects::stamp_type(res, &mut new);
    let name = objects::name(&old).to_string();
    let old_rv = objects::meta_str(&old, "resourceVersion")
        .unwrap_or_default()
        .to_string();
    if let Some(rv) = objects::meta_str(&new, "resourceVersion").filter(|rv| !rv.is_empty()) {
        if rv != old_rv {
            return Err(ApiError::conflict(
                res,
                &name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
    }
    new = match sub {
        Some("status") => {
            let mut merged = old.clone();
            merged["status"] = new.get("status").cloned().unwrap_or(json!({}));
            merged
        }
        Some("finalize") => {
            let mut merged = old.clone();
            merged["spec"]["finalizers"] = new
                .pointer("/spec/finalizers")
                .cloned()
                .unwrap_or(json!([]));
            merged
        }
        _ => {
            if res.has_status() {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            new
        }
    };
    let old_meta = objects::meta(&old).cloned().unwrap_or_default();
    let meta = meta_mut(&mut new);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
        "generation",
    ] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    if !meta.contains_key("managedFields") {
        if let Some(m) = old_meta.get("managedFields") {
            meta.insert("managedFields".into(), m.clone());
        }
    }
    meta.insert("resourceVersion".into(), json!(old_rv));
    api::defaults::apply_defaults(res.kind, &mut new);
    ctx.decode(&new)?;
    kinds::allocate(ctx.state, txn, res, &mut new, Some(&old))?;
    invalid(
        res,
        &new,
        api::validation::validate_update(res.kind, &new, &old),
    )?;
    if res.tracks_generation() && objects::spec_part(&new) != objects::spec_part(&old) {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            + 1;
        meta_mut(&mut new).insert("generation".into(), json!(generation));
    }
    if ctx.track {
        api::apply::track_update(
            res.kind,
            &res.api_version(),
            Some(&old),
            &mut new,
            &ctx.manager,
            "Update",
            &now(),
        );
    }
    if new == old {
        return Ok(old);
    }
    let key = res.key(objects::namespace(&old), &name);
    let deleting = objects::meta_str(&new, "deletionTimestamp").is_some();
    if deleting && objects::finalizers(&new).is_empty() && !ctx.dry_run {
        txn.delete(&key);
        return Ok(new);
    }
    Ok(ctx.store(txn, &key, new))
}

/// The stored object at `key`, or the NotFound status for `name`.
fn existing(txn: &Txn<'_>, res: &Resource, key: &str, name: &str) -> Result<Value> {
    txn.get(key)?.ok_or_else(|| ApiError::not_found(res, name))
}

fn item_key(call: &Call) -> (String, String) {
    let t = &call.target;
    let name = t.name.clone().unwrap_or_default();
    (t.res.key(t.namespace.as_deref(), &name), name)
}

pub async fn create(call: Call) -> Result<Response> {
    let obj = call.body_object()?;
    let mut ctx = WriteCtx::new(&call)?;
    ctx.refuse_resource_version = true;
    let namespace = call.target.namespace.clone();
    let state = call.state.clone();
    let created = state
        .store
        .write(|txn| create_in(&mut ctx, txn, namespace.as_deref(), obj))
        .await?;
    Ok(ctx.respond(&call, 201, created))
}

pub async fn update(call: Call) -> Result<Response> {
    let new = call.body_object()?;
    let (key, name) = item_key(&call);
    if let Some(given) = objects::meta_str(&new, "name").filter(|n| !n.is_empty()) {
        if given != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
    }
    let mut ctx = WriteCtx::new(&call)?;
    let sub = call.target.sub.clone();
    let state = call.state.clone();
    let res = call.res();
    let updated = state
        .store
        .write(|txn| {
            let old = existing(txn, res, &key, &name)?;
            update_in(&mut ctx, txn, sub.as_deref(), old, new)
        })
        .await?;
    Ok(ctx.respond(&call, 200, updated))
}

/// The body of a patch request, parsed by its content type.
fn patch_body(call: &Call) -> Result<Value> {
    let bad = |e: String| ApiError::bad_request(e);
    let content_type = call.content_type();
    match content_type {
        "application/apply-patch+yaml" => {
            let applied = super::yaml_document(&call.body).map_err(|e| {
                bad(format!(
                    "error decoding patch: error converting YAML to JSON: {e}"
                ))
            })?;
            match api::body::json_value_kind(&applied) {
                Some(kind) => Err(bad(format!(
                    "error decoding patch: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
                ))),
                None if applied.is_null() => Ok(json!({})),
                None => Ok(applied),
            }
        }
        "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json" => {
            // The strategic merge patcher passes the decoder's message on bare.
            let prefix = if content_type == "application/strategic-merge-patch+json" {
                ""
            } else {
                "error decoding patch: "
            };
            if let Some(syntax) = api::body::json_syntax_error(&call.body) {
                return Err(bad(format!("{prefix}{syntax}")));
            }
            serde_json::from_slice(&call.body).map_err(|e| bad(format!("{prefix}{e}")))
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

/// Applies a non-apply patch to `old`. Failures answer as the apiserver's patchers do:
/// a malformed patch is 400, too many JSON patch operations 413, a JSON patch that
/// does not apply 422 with the generic text (the apiserver keeps the library's message
/// out of the Status), and the strategic merge errors it does not classify 500.
fn apply_patch(res: &Resource, content_type: &str, old: &Value, patch: &Value) -> Result<Value> {
    let result = match content_type {
        "application/json-patch+json" => api::patch::json_patch(old, patch),
        "application/merge-patch+json" => api::patch::merge_patch(old, patch),
        _ => api::patch::strategic_merge_patch(res.kind, old, patch),
    };
    result.map_err(patch_error)
}

/// Refuses a patched document that does not decode as the resource's type, as the
/// apiserver does after patching: 422 naming the whole document as the invalid `patch`.
fn check_patched(res: &Resource, patched: &Value) -> Result<()> {
    let why = match api::body::json_value_kind(patched) {
        Some(kind) => api::body::version_kind_error(api::body::VersionKindError::NotAnObject(kind)),
        None => match objects::decode(res, patched) {
            Ok(_) => return Ok(()),
            Err(e) => e,
        },
    };
    let error = api::field::FieldError::invalid("patch", patched.to_string(), why);
    Err(ApiError::new(
        422,
        "Invalid",
        format!(" \"\" is invalid: {}", api::field::aggregate(std::slice::from_ref(&error))),
    )
    .with_details(json!({
        "causes": [{"reason": error.kind.cause_reason(), "message": error.body(), "field": error.field}],
    })))
}

fn patch_error(err: api::patch::PatchError) -> ApiError {
    match err.code() {
        400 => ApiError::bad_request(err.to_string()),
        413 => ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: {err}"),
        ),
        422 => ApiError::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        )
        .with_details(json!({})),
        _ => ApiError::unknown(err.to_string()),
    }
}

fn apply_conflicts(res: &Resource, name: &str, conflicts: &[api::apply::Conflict]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version),
                "field": c.field,
            })
        })
        .collect();
    let message = match conflicts {
        [one] => format!(
            "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
            one.manager, one.api_version, one.field
        ),
        many => {
            let lines: Vec<String> = many
                .iter()
                .map(|c| {
                    format!(
                        "conflict with \"{}\" using {}: {}",
                        c.manager, c.api_version, c.field
                    )
                })
                .collect();
            format!(
                "Apply failed with {} conflicts: {}",
                many.len(),
                lines.join("\n")
            )
        }
    };
    ApiError::new(409, "Conflict", message).with_details(
        json!({"name": name, "group": res.group, "kind": res.plural, "causes": causes}),
    )
}

pub async fn patch(call: Call) -> Result<Response> {
    let body = patch_body(&call)?;
    let content_type = call.content_type().to_string();
    let is_apply = content_type == "application/apply-patch+yaml";
    if is_apply && call.params.get("fieldManager").is_none() {
        return Err(ApiError::bad_request(
            "PATCH, application/apply-patch+yaml requires fieldManager to be set",
        ));
    }
    let (key, name) = item_key(&call);
    let mut ctx = WriteCtx::new(&call)?;
    let sub = call.target.sub.clone();
    let namespace = call.target.namespace.clone();
    let force = call.params.flag("force");
    let res = call.res();
    let state = call.state.clone();
    let (code, obj) = state
        .store
        .write(|txn| {
            let old = txn.get(&key)?;
            if !is_apply {
                let old = old.ok_or_else(|| ApiError::not_found(res, &name))?;
                let patched = apply_patch(res, &content_type, &old, &body)?;
                check_patched(res, &patched)?;
                return Ok((200, update_in(&mut ctx, txn, sub.as_deref(), old, patched)?));
            }
            check_type(res, &body)?;
            if let Some(given) = objects::meta_str(&body, "name").filter(|n| *n != name) {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            let mut applied = body.clone();
            meta_mut(&mut applied).insert("name".into(), json!(name));
            let merged = api::apply::apply(
                res.kind,
                &res.api_version(),
                old.as_ref(),
                &applied,
                &ctx.manager,
                force,
                &now(),
            )
            .map_err(|e| match e {
                api::apply::ApplyError::Conflicts(c) => apply_conflicts(res, &name, &c),
                other => ApiError::bad_request(other.to_string()),
            })?;
            ctx.track = false;
            match old {
                None => Ok((201, create_in(&mut ctx, txn, namespace.as_deref(), merged)?)),
                Some(old) => Ok((200, update_in(&mut ctx, txn, sub.as_deref(), old, merged)?)),
            }
        })
        .await?;
    Ok(ctx.respond(&call, code, obj))
}

/// DeleteOptions: the body's when the request has one, else the query's.
#[derive(Debug, Default)]
struct DeleteOptions {
    propagation: Option<String>,
    /// The deprecated `orphanDependents`.
    orphan: Option<bool>,
    grace: Option<i64>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

impl DeleteOptions {
    fn from_call(call: &Call) -> Result<Self> {
        let opts = if call.body.iter().all(u8::is_ascii_whitespace) {
            let p = &call.params;
            DeleteOptions {
                propagation: p.get("propagationPolicy").map(str::to_string),
                orphan: p.get("orphanDependents").map(|v| v == "true"),
                grace: p.get("gracePeriodSeconds").and_then(|g| g.parse().ok()),
                uid: None,
                resource_version: None,
                dry_run: p.dry_run(),
            }
        } else {
            let body: Value = if call.content_type() == "application/vnd.kubernetes.protobuf" {
                objects::from_protobuf(&call.body)
                    .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
            } else {
                serde_json::from_slice(&call.body)
                    .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
            };
            let text = |pointer: &str| {
                body.pointer(pointer)
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            DeleteOptions {
                propagation: text("/propagationPolicy"),
                orphan: body.get("orphanDependents").and_then(Value::as_bool),
                grace: body.get("gracePeriodSeconds").and_then(Value::as_i64),
                uid: text("/preconditions/uid"),
                resource_version: text("/preconditions/resourceVersion"),
                dry_run: body
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|d| d.iter().any(|v| v == "All")),
            }
        };
        let mut errors = Vec::new();
        if let (Some(_), Some(p)) = (opts.orphan, &opts.propagation) {
            errors.push(api::field::FieldError::invalid(
                "propagationPolicy",
                p.as_str(),
                "orphanDependents and deletionPropagation cannot be both set",
            ));
        }
        if let Some(p) = &opts.propagation {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                errors.push(api::field::FieldError::not_supported(
                    "propagationPolicy",
                    p.as_str(),
                    &["Foreground", "Background", "Orphan", "nil"],
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid_options("DeleteOptions", &errors));
        }
        Ok(opts)
    }

    /// Whether dependents are orphaned, and whether they are deleted before the owner
    /// (foreground): the options decide, else the finalizer the object already has,
    /// else neither (background).
    fn propagation(&self, finalizers: &[String]) -> (bool, bool) {
        if let Some(orphan) = self.orphan {
            return (orphan, false);
        }
        match self.propagation.as_deref() {
            Some("Orphan") => (true, false),
            Some("Foreground") => (false, true),
            Some(_) => (false, false),
            None => finalizers
                .iter()
                .find_map(|f| match f.as_str() {
                    ORPHAN => Some((true, false)),
                    FOREGROUND => Some((false, true)),
                    _ => None,
                })
                .unwrap_or((false, false)),
        }
    }

    /// The finalizers the garbage collector acts on, set as the options ask: both are
    /// taken off, then the one that applies is put back at the end.
    fn gc_finalizers(&self, finalizers: &[String]) -> Vec<String> {
        let (orphan, foreground) = self.propagation(finalizers);
        let mut out: Vec<String> = finalizers
            .iter()
            .filter(|f| f.as_str() != ORPHAN && f.as_str() != FOREGROUND)
            .cloned()
            .collect();
        if orphan {
            out.push(ORPHAN.to_string());
        }
        if foreground {
            out.push(FOREGROUND.to_string());
        }
        out
    }
}

/// The finalizer that makes the garbage collector orphan an object's dependents.
const ORPHAN: &str = "orphan";
/// The finalizer that makes the garbage collector delete the dependents first.
const FOREGROUND: &str = "foregroundDeletion";

/// What a delete did.
pub enum Deleted {
    /// Gone from the store.
    Now(Value),
    /// Marked with deletionTimestamp; finalizers or a grace period still hold it.
    Pending(Value),
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> Value {
    json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn deletion_timestamp(obj: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
    objects::meta_str(obj, "deletionTimestamp")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// The first mark of a deletion counts as a change of the object's generation.
fn bump_generation(obj: &mut Value) {
    let meta = meta_mut(obj);
    if let Some(g) = meta
        .get("generation")
        .and_then(Value::as_i64)
        .filter(|g| *g > 0)
    {
        meta.insert("generation".into(), json!(g + 1));
    }
}

/// Marks an object that finalizers hold: deleted now (or earlier, if it already was),
/// with no grace period left.
fn mark_as_deleting(obj: &mut Value, now: chrono::DateTime<chrono::Utc>) {
    let existing = deletion_timestamp(obj);
    if objects::meta_str(obj, "deletionTimestamp").is_none() {
        bump_generation(obj);
    }
    let meta = meta_mut(obj);
    if existing.is_none_or(|t| t > now) {
        meta.insert("deletionTimestamp".into(), timestamp(now));
    }
    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
}

fn delete_in(
    ctx: &WriteCtx<'_>,
    txn: &mut Txn<'_>,
    obj: Value,
    opts: &DeleteOptions,
) -> Result<Deleted> {
    let res = ctx.res;
    let name = objects::name(&obj).to_string();
    // Named by kind, as the apiserver's early precondition check names them.
    let by_kind = Resource {
        plural: res.kind,
        ..*res
    };
    let uid = objects::meta_str(&obj, "uid").unwrap_or_default();
    if let Some(want) = opts.uid.as_deref().filter(|w| *w != uid) {
        return Err(ApiError::conflict(
            &by_kind,
            &name,
            &format!("the UID in the precondition ({want}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"),
        ));
    }
    let rv = objects::meta_str(&obj, "resourceVersion").unwrap_or_default();
    if let Some(want) = opts.resource_version.as_deref().filter(|w| *w != rv) {
        return Err(ApiError::conflict(
            &by_kind,
            &name,
            &format!("the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record ({rv}). The object might have been modified"),
        ));
    }
    if res.kind == "Namespace" {
        return kinds::delete_namespace(ctx.state, txn, obj, ctx.dry_run).map(Deleted::Pending);
    }
    let key = res.key(objects::namespace(&obj), &name);
    let original = obj.clone();
    let mut obj = obj;
    let now = chrono::Utc::now();
    // Pods are deleted gracefully: the first delete sets a grace period, a later one
    // may only shorten it; while it runs, deletes change nothing else.
    let mut graceful = None;
    let current_grace = objects::meta(&obj)
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    match deletion_timestamp(&obj) {
        Some(since) if res.kind == "Pod" && current_grace > 0 => {
            let Some(wanted) = opts.grace.map(|g| if g < 0 { 1 } else { g }) else {
                return Ok(Deleted::Pending(obj));
            };
            if wanted >= current_grace {
                return Ok(Deleted::Pending(obj));
            }
            let mut period = wanted;
            let mut at = since - chrono::Duration::seconds(current_grace)
                + chrono::Duration::seconds(wanted);
            if at < now {
                at = now;
                if period != 0 {
                    period = 1;
                }
            }
            let meta = meta_mut(&mut obj);
            meta.insert("deletionTimestamp".into(), timestamp(at));
            meta.insert("deletionGracePeriodSeconds".into(), json!(period));
            graceful = Some(period);
        }
        None if res.kind == "Pod" => {
            let period = kinds::grace_period(res, &obj, opts.grace);
            bump_generation(&mut obj);
            let meta = meta_mut(&mut obj);
            meta.insert(
                "deletionTimestamp".into(),
                timestamp(now + chrono::Duration::seconds(period)),
            );
            meta.insert("deletionGracePeriodSeconds".into(), json!(period));
            graceful = Some(period);
        }
        _ => {}
    }
    let current = objects::finalizers(&obj);
    let finalizers = opts.gc_finalizers(&current);
    if finalizers != current {
        meta_mut(&mut obj).insert("finalizers".into(), json!(finalizers));
    }
    let held = !finalizers.is_empty();
    let keep = match graceful {
        None if held => {
            mark_as_deleting(&mut obj, now);
            true
        }
        None => false,
        Some(period) => held || period > 0,
    };
    if !keep {
        if !ctx.dry_run {
            txn.delete(&key);
        }
        return Ok(Deleted::Now(obj));
    }
    if obj == original {
        return Ok(Deleted::Pending(obj));
    }
    Ok(Deleted::Pending(ctx.store(txn, &key, obj)))
}

pub async fn delete(call: Call) -> Result<Response> {
    let opts = DeleteOptions::from_call(&call)?;
    let (key, name) = item_key(&call);
    let mut ctx = WriteCtx::new(&call)?;
    ctx.dry_run |= opts.dry_run;
    let res = call.res();
    let state = call.state.clone();
    let outcome = state
        .store
        .write(|txn| {
            let obj = existing(txn, res, &key, &name)?;
            delete_in(&ctx, txn, obj, &opts)
        })
        .await?;
    match outcome {
        Deleted::Now(obj) => {
            let uid = objects::meta_str(&obj, "uid");
            Ok(json_response(200, &success_status(res, &name, uid)))
        }
        Deleted::Pending(obj) => {
            if res.kind == "Namespace" {
                kinds::spawn_namespace_finalizer(state.clone(), name);
            }
            // Accepted, not done: kept only for clients that ask the deprecated way.
            let code = if opts.orphan == Some(false) { 202 } else { 200 };
            Ok(respond(&call, code, obj))
        }
    }
}

pub async fn delete_collection(call: Call) -> Result<Response> {
    let opts = DeleteOptions::from_call(&call)?;
    let filter = super::read::Filter::from_call(&call)?;
    let mut ctx = WriteCtx::new(&call)?;
    ctx.dry_run |= opts.dry_run;
    let res = call.res();
    let prefix = res.key_prefix(call.target.namespace.as_deref());
    let state = call.state.clone();
    // Answered like the apiserver: the objects as listed before they were deleted, at
    // the revision they were listed at.
    let (rv, listed, held) = state
        .store
        .write(|txn| {
            let listed: Vec<Value> = txn
                .list(&prefix)?
                .into_iter()
                .filter(|o| filter.matches(o))
                .collect();
            let mut held = Vec::new();
            for obj in &listed {
                if let Deleted::Pending(obj) = delete_in(&ctx, txn, obj.clone(), &opts)? {
                    held.push(objects::name(&obj).to_string());
                }
            }
            Ok::<_, ApiError>((txn.revision() - 1, listed, held))
        })
        .await?;
    if res.kind == "Namespace" {
        for name in held {
            kinds::spawn_namespace_finalizer(state.clone(), name);
        }
    }
    let list = json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": listed,
    });
    Ok(json_response(200, &list))
}

fn scale_of(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| api::selector::LabelSelector::from_object(s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let meta = objects::meta(obj).cloned().unwrap_or_default();
    let keep: Map<String, Value> = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ]
    .iter()
    .filter_map(|k| meta.get(*k).map(|v| (k.to_string(), v.clone())))
    .collect();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": keep,
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

pub async fn get_scale(call: Call) -> Result<Response> {
    let (key, name) = item_key(&call);
    let obj = call
        .state
        .store
        .get(&key)
        .await?
        .ok_or_else(|| ApiError::not_found(call.res(), &name))?;
    Ok(json_response(200, &scale_of(&obj)))
}

async fn write_scale(call: Call, patch: Option<(String, Value)>) -> Result<Response> {
    let (key, name) = item_key(&call);
    let body = match &patch {
        Some(_) => Value::Null,
        None => serde_json::from_slice::<Value>(&call.body).map_err(|e| {
            ApiError::bad_request(format!(
                "Scale in version \"v1\" cannot be handled as a Scale: {e}"
            ))
        })?,
    };
    let mut ctx = WriteCtx::new(&call)?;
    let res = call.res();
    let state = call.state.clone();
    let updated = state
        .store
        .write(|txn| {
            let old = existing(txn, res, &key, &name)?;
            let current = scale_of(&old);
            let scale = match &patch {
                Some((content_type, p)) => match content_type.as_str() {
                    "application/json-patch+json" => api::patch::json_patch(&current, p),
                    "application/merge-patch+json" => api::patch::merge_patch(&current, p),
                    _ => api::patch::strategic_merge_patch("Scale", &current, p),
                }
                .map_err(patch_error)?,
                None => body,
            };
            let replicas = scale
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if replicas < 0 {
                let err = api::field::FieldError::invalid(
                    "spec.replicas",
                    replicas,
                    "must be greater than or equal to 0",
                );
                let scale_res = Resource {
                    group: "autoscaling",
                    kind: "Scale",
                    ..*res
                };
                return Err(ApiError::invalid(&scale_res, &name, &[err]));
            }
            let mut new = old.clone();
            new["spec"]["replicas"] = json!(replicas);
            if let Some(rv) =
                objects::meta_str(&scale, "resourceVersion").filter(|rv| !rv.is_empty())
            {
                meta_mut(&mut new).insert("resourceVersion".into(), json!(rv));
            }
            update_in(&mut ctx, txn, None, old, new)
        })
        .await?;
    Ok(json_response(200, &scale_of(&updated)))
}

pub async fn update_scale(call: Call) -> Result<Response> {
    write_scale(call, None).await
}

pub async fn patch_scale(call: Call) -> Result<Response> {
    let body = patch_body(&call)?;
    let content_type = call.content_type().to_string();
    write_scale(call, Some((content_type, body))).await
}

/// `pods/{name}/binding`: assigns a pending pod to a node, once.
pub async fn bind(call: Call) -> Result<Response> {
    let binding: Value = serde_json::from_slice(&call.body).map_err(|e| {
        ApiError::bad_request(format!(
            "Binding in version \"v1\" cannot be handled as a Binding: {e}"
        ))
    })?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (key, name) = item_key(&call);
    let ctx = WriteCtx::new(&call)?;
    let res = call.res();
    if node.is_empty() {
        let err = api::field::FieldError::required("target.name", "");
        let binding_res = Resource {
            kind: "Binding",
            ..*res
        };
        return Err(ApiError::invalid(&binding_res, &name, &[err]));
    }
    let state = call.state.clone();
    state
        .store
        .write(|txn| {
            let old = existing(txn, res, &key, &name)?;
            if let Some(current) = old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(ApiError::conflict(
                    res,
                    &name,
                    &format!("pod {name} is already assigned to node \"{current}\""),
                ));
            }
            if objects::meta_str(&old, "deletionTimestamp").is_some() {
                return Err(ApiError::conflict(
                    res,
                    &name,
                    &format!("pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            let mut new = old;
            new["spec"]["nodeName"] = json!(node);
            kinds::set_pod_condition(&mut new, "PodScheduled", "True");
            Ok::<_, ApiError>(ctx.store(txn, &key, new))
        })
        .await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok((
        http::StatusCode::CREATED,
        [(http::header::CONTENT_TYPE, "application/json")],
        status.to_string(),
    )
        .into_response())
}

/// Resources whose objects live in a namespace, for namespace deletion.
pub fn namespaced_resources() -> impl Iterator<Item = &'static Resource> {
    resources::RESOURCES.iter().filter(|r| r.namespaced)
}

/// Deletes every object of `namespace` (background propagation); returns how many remain.
pub fn empty_namespace(state: &AppState, txn: &mut Txn<'_>, namespace: &str) -> Result<usize> {
    let opts = DeleteOptions {
        grace: Some(0),
        ..DeleteOptions::default()
    };
    let mut remaining = 0;
    for res in namespaced_resources() {
        let ctx = WriteCtx {
            state,
            res,
            manager: "namespace-controller".into(),
            validation: FieldValidation::Ignore,
            dry_run: false,
            track: true,
            refuse_resource_version: false,
            warnings: Vec::new(),
        };
        for obj in txn.list(&res.key_prefix(Some(namespace)))? {
            if let Deleted::Pending(_) = delete_in(&ctx, txn, obj, &opts)? {
                remaining += 1;
            }
        }
    }
    Ok(remaining)
}
