//! What some kinds need beyond generic REST: the default namespaces and the
//! `kubernetes` Service at start-up, status reset on create, Service ClusterIP and
//! NodePort allocation, graceful pod deletion, and the namespace lifecycle
//! (Terminating, emptied, then removed).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use api::alloc::{IpAllocator, PortAllocator, ServiceAllocError, ServiceAllocator};

use serde_json::{json, Value};

use crate::error::{ApiError, Result};
use crate::handlers::write::{empty_namespace, FieldValidation, WriteCtx};
use crate::objects;
use crate::resources::{self, Resource};
use crate::store::Txn;
use crate::{AppState, SharedState};

const DEFAULT_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];
const SERVICES_PREFIX: &str = "/registry/core/services/";
const INGRESS_CLASSES_PREFIX: &str = "/registry/networking.k8s.io/ingressclasses/";
/// The annotation that makes an IngressClass the cluster's default.
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The deprecated class annotation, which an Ingress may carry instead of a class name.
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

fn resource(kind: &str) -> &'static Resource {
    resources::by_kind(kind).expect("built-in kind is in the resource table")
}

fn system_ctx<'a>(state: &'a AppState, kind: &str) -> WriteCtx<'a> {
    WriteCtx {
        state,
        res: resource(kind),
        manager: "kube-apiserver".into(),
        validation: FieldValidation::Strict,
        dry_run: false,
        track: true,
        refuse_resource_version: false,
        warnings: Vec::new(),
    }
}

/// Makes sure the default namespaces exist and that the `kubernetes` Service, its
/// Endpoints and EndpointSlice point at this server, as the real apiserver's endpoint
/// reconciler does; resumes finalizing namespaces that were Terminating at shutdown.
pub async fn bootstrap(state: &SharedState, advertise: IpAddr, port: u16) -> anyhow::Result<()> {
    state
        .store
        .write(|txn| {
            for ns in DEFAULT_NAMESPACES {
                let res = resource("Namespace");
                if txn.get(&res.key(None, ns))?.is_none() {
                    let mut ctx = system_ctx(state, "Namespace");
                    crate::handlers::write::create_in(&mut ctx, txn, None, json!({"metadata": {"name": ns}}))?;
                }
            }
            let first = IpAllocator::new(&state.service_cidr).map_err(ApiError::internal)?.first();
            let service = json!({
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {
                    "type": "ClusterIP",
                    "clusterIP": first.to_string(),
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
                    "sessionAffinity": "None",
                },
            });
            let endpoints = json!({
                "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": [{
                    "addresses": [{"ip": advertise.to_string()}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                }],
            });
            let slice = json!({
                "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
                "addressType": if advertise.is_ipv4() { "IPv4" } else { "IPv6" },
                "endpoints": [{"addresses": [advertise.to_string()], "conditions": {"ready": true}}],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            });
            upsert(state, txn, "Service", "default", service)?;
            // Like kube-apiserver, a loopback address is never published as an endpoint:
            // such a server is reachable from this host only, not from pods.
            for (kind, obj) in [("Endpoints", endpoints), ("EndpointSlice", slice)] {
                if advertise.is_loopback() {
                    let key = resource(kind).key(Some("default"), "kubernetes");
                    if txn.get(&key)?.is_some() {
                        txn.delete(&key);
                    }
                } else {
                    upsert(state, txn, kind, "default", obj)?;
                }
            }
            Ok::<_, ApiError>(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("bootstrapping the default objects: {}", e.message))?;
    let (_, namespaces) = state
        .store
        .list(&resource("Namespace").key_prefix(None))
        .await?;
    for ns in namespaces
        .iter()
        .filter(|n| objects::meta_str(n, "deletionTimestamp").is_some())
    {
        spawn_namespace_finalizer(state.clone(), objects::name(ns).to_string());
    }
    Ok(())
}

/// Creates `obj`, or brings the stored one in line with it (a no-op when equal).
fn upsert(
    state: &AppState,
    txn: &mut Txn<'_>,
    kind: &str,
    namespace: &str,
    obj: Value,
) -> Result<()> {
    let mut ctx = system_ctx(state, kind);
    let key = ctx.res.key(Some(namespace), objects::name(&obj));
    match txn.get(&key)? {
        None => crate::handlers::write::create_in(&mut ctx, txn, Some(namespace), obj)?,
        Some(old) => {
            let mut new = old.clone();
            for (field, value) in obj.as_object().into_iter().flatten() {
                if field == "metadata" {
                    new["metadata"]["labels"] = value["labels"].clone();
                } else {
                    new[field] = value.clone();
                }
            }
            crate::handlers::write::update_in(&mut ctx, txn, None, old, new)?
        }
    };
    Ok(())
}

/// Server-owned state a client may not set on create.
pub fn reset_for_create(res: &Resource, obj: &mut Value) {
    let status = match res.kind {
        "Pod" => {
            let mut status = json!({"phase": "Pending"});
            status["qosClass"] = json!(qos_class(obj));
            status
        }
        "Service" => json!({"loadBalancer": {}}),
        "Deployment" | "ReplicaSet" | "Ingress" => json!({}),
        "Namespace" => json!({"phase": "Active"}),
        _ => return,
    };
    if let Some(map) = obj.as_object_mut() {
        if status.as_object().is_some_and(|m| m.is_empty()) && res.kind != "Ingress" {
            map.remove("status");
        } else {
            map.insert("status".into(), status);
        }
    }
}

fn qos_class(pod: &Value) -> &'static str {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        any |= limits.is_some_and(|m| !m.is_empty()) || requests.is_some_and(|m| !m.is_empty());
        let full = ["cpu", "memory"]
            .iter()
            .all(|r| limits.is_some_and(|m| m.contains_key(*r)));
        let equal = requests.is_none_or(|req| {
            req.iter()
                .all(|(k, v)| limits.and_then(|l| l.get(k)) == Some(v))
        });
        guaranteed &= full && equal;
    }
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}

/// Refuses content in a namespace that does not exist or is being terminated.
pub fn check_namespace_open(txn: &Txn<'_>, res: &Resource, namespace: &str) -> Result<()> {
    let ns_res = resource("Namespace");
    match txn.get(&ns_res.key(None, namespace))? {
        None => Err(ApiError::not_found(ns_res, namespace)),
        Some(ns) if objects::meta_str(&ns, "deletionTimestamp").is_some() => {
            let mut err = ApiError::forbidden(
                res,
                "",
                &format!("unable to create new content in namespace {namespace} because it is being terminated"),
            );
            err.message = format!(
                "{} is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                res.qualified()
            );
            Err(err)
        }
        Some(_) => Ok(()),
    }
}

/// The DefaultIngressClass admission plugin: an Ingress created with neither
/// `spec.ingressClassName` nor the `kubernetes.io/ingress.class` annotation gets the
/// default IngressClass (annotated `ingressclass.kubernetes.io/is-default-class:
/// "true"`); with several defaults, the most recently created, as upstream picks.
pub fn admit_create(txn: &Txn<'_>, res: &Resource, obj: &mut Value) -> Result<()> {
    if res.kind != "Ingress" {
        return Ok(());
    }
    let has_class = obj
        .pointer("/spec/ingressClassName")
        .is_some_and(|c| !c.is_null());
    let annotated = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|a| a.contains_key(CLASS_ANNOTATION));
    if has_class || annotated {
        return Ok(());
    }
    let default = txn
        .list(INGRESS_CLASSES_PREFIX)?
        .into_iter()
        .filter(|class| {
            class
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .and_then(Value::as_str)
                == Some("true")
        })
        .max_by(|a, b| {
            let created = |c: &Value| {
                c.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            created(a)
                .cmp(&created(b))
                .then_with(|| objects::name(b).cmp(objects::name(a)))
        });
    if let Some(class) = default {
        let name = objects::name(&class).to_owned();
        if let Some(spec) = obj
            .as_object_mut()
            .map(|o| o.entry("spec").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
        {
            spec.insert("ingressClassName".into(), json!(name));
        }
    }
    Ok(())
}

/// The specs of the stored Services, `(namespace, name)` → spec, as of the committed
/// revision `revision`.
pub struct ServiceSpecs {
    revision: u64,
    specs: BTreeMap<(String, String), Value>,
}

/// Allocates (and on update, keeps or frees) a Service's ClusterIPs and NodePorts.
/// What is in use is read from the stored Services inside the same transaction, so
/// allocation cannot drift from the store and a failed request holds nothing. The
/// decoded specs are kept for the next transaction: they are reused only when nothing
/// was committed in between (the store's revision is still the one they were read
/// at), so a run of Service creates decodes the stored Services once.
pub fn allocate(
    state: &AppState,
    txn: &Txn<'_>,
    res: &Resource,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<()> {
    if res.kind != "Service" {
        return Ok(());
    }
    let internal = |e: api::alloc::AllocError| ApiError::internal(e);
    let mut alloc = ServiceAllocator::new(
        IpAllocator::new(&state.service_cidr).map_err(internal)?,
        PortAllocator::new(&state.node_port_range).map_err(internal)?,
    );
    let this = (
        objects::namespace(obj).unwrap_or_default().to_string(),
        objects::name(obj).to_string(),
    );
    let committed = txn.revision() - 1;
    let mut memo = state
        .service_specs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let specs = match memo.take() {
        Some(kept) if kept.revision == committed => kept.specs,
        _ => txn
            .list(SERVICES_PREFIX)?
            .into_iter()
            .map(|svc| {
                let key = (
                    objects::namespace(&svc).unwrap_or_default().to_string(),
                    objects::name(&svc).to_string(),
                );
                (key, svc.get("spec").cloned().unwrap_or(Value::Null))
            })
            .collect(),
    };
    for (key, spec) in &specs {
        if *key != this {
            alloc.restore_spec(spec);
        }
    }
    let result = match old {
        None => alloc.allocate_create(obj),
        Some(old) => alloc.allocate_update(obj, old),
    };
    if result.is_ok() {
        let mut specs = specs;
        specs.insert(this, obj.get("spec").cloned().unwrap_or(Value::Null));
        // Valid once this transaction commits as its revision; if it does not, the
        // next transaction's revision will not match and the specs are read again.
        *memo = Some(ServiceSpecs {
            revision: txn.revision(),
            specs,
        });
    }
    result.map_err(|e| match e {
        ServiceAllocError::Invalid(errors) => ApiError::invalid(res, objects::name(obj), &errors),
        ServiceAllocError::Internal(text) => ApiError::internal(text),
    })
}

/// The grace period a delete waits for: pods bound to a node get theirs (default 30s)
/// so the kubelet can stop them; everything else goes at once.
pub fn grace_period(res: &Resource, obj: &Value, requested: Option<i64>) -> i64 {
    if res.kind != "Pod" {
        return 0;
    }
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let terminal = matches!(
        obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || terminal {
        return 0;
    }
    requested
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

pub fn set_pod_condition(pod: &mut Value, kind: &str, status: &str) {
    let now = objects::now_rfc3339();
    if !pod.get("status").is_some_and(Value::is_object) {
        pod["status"] = json!({});
    }
    let conditions = &mut pod["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    list.retain(|c| c.get("type").and_then(Value::as_str) != Some(kind));
    list.push(
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now}),
    );
}

/// Marks a namespace Terminating; the finalizer task empties and removes it.
pub fn delete_namespace(
    state: &AppState,
    txn: &mut Txn<'_>,
    mut ns: Value,
    dry_run: bool,
) -> Result<Value> {
    let name = objects::name(&ns).to_string();
    let res = resource("Namespace");
    if DEFAULT_NAMESPACES.contains(&name.as_str()) && name != "kube-node-lease" {
        return Err(ApiError::forbidden(
            res,
            &name,
            "this namespace may not be deleted",
        ));
    }
    let _ = state;
    if objects::meta_str(&ns, "deletionTimestamp").is_none() {
        objects::meta_mut(&mut ns)
            .insert("deletionTimestamp".into(), json!(objects::now_rfc3339()));
        objects::meta_mut(&mut ns).insert("deletionGracePeriodSeconds".into(), json!(0));
        ns["status"]["phase"] = json!("Terminating");
    }
    if dry_run {
        return Ok(ns);
    }
    Ok(txn.put(&res.key(None, &name), ns))
}

/// Empties a Terminating namespace, then removes it once nothing in it remains.
pub fn spawn_namespace_finalizer(state: SharedState, name: String) {
    tokio::spawn(async move {
        loop {
            let outcome = state
                .store
                .write(|txn| {
                    let remaining = empty_namespace(&state, txn, &name)?;
                    if remaining > 0 {
                        return Ok::<_, ApiError>(false);
                    }
                    let res = resource("Namespace");
                    let key = res.key(None, &name);
                    if let Some(ns) = txn.get(&key)? {
                        if objects::finalizers(&ns).is_empty() {
                            txn.delete(&key);
                        } else {
                            let mut ns = ns;
                            ns["spec"]["finalizers"] = json!([]);
                            txn.put(&key, ns);
                        }
                    }
                    Ok(true)
                })
                .await;
            match outcome {
                Ok(true) => break,
                Ok(false) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(err) => {
                    tracing::warn!(namespace = %name, error = %err.message, "finalizing namespace");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });
}
