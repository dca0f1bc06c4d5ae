//! The EndpointSlice mirroring controller, as kube-controller-manager's: the Endpoints a
//! user writes for a Service without a selector are copied into EndpointSlices (labelled
//! `endpointslice.kubernetes.io/managed-by: endpointslicemirroring-controller.k8s.io`,
//! owned by the Endpoints) so that slice consumers such as kube-proxy see them too.
//!
//! Each subset becomes the slice of its ports and address family, with at most
//! [`MAX_ENDPOINTS_PER_SUBSET`] addresses; invalid IPs are skipped. Endpoints labelled
//! `endpointslice.kubernetes.io/skip-mirror: "true"`, leader-election records, and those
//! of a Service that has a selector (the endpoints controller's own) or no Service at all
//! are not mirrored, and their mirrored slices are deleted. When the Endpoints themselves
//! go, their slices follow through the ownerReference (the garbage collector's job).
//!
//! The decision is the pure [`mirror_slices`]; [`run`] drives it like the EndpointSlice
//! controller drives its own.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::Api;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::{
    canonical_ip, endpoint_key, error_policy, ports_key, same_endpoint, slices_of, Error,
    Expectations, Result, SlicePlan, SliceRoute, SliceWriter, LABEL_MANAGED_BY, LABEL_SERVICE_NAME,
    STALE_CACHE_RETRY,
};
use crate::endpoints::{Family, LAST_CHANGE_TRIGGER_TIME, WORKERS};
use crate::runtime::{drive, enqueue, queue, report, same_name, Seen};

/// This controller's `managed-by` value.
pub const CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// The field manager of this controller's writes.
pub const FIELD_MANAGER: &str = "endpointslicemirroring-controller";
/// Label with which an Endpoints object opts out of mirroring.
pub const LABEL_SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Upstream's default `--mirroring-max-endpoints-per-subset`.
pub const MAX_ENDPOINTS_PER_SUBSET: usize = 1000;

/// The annotation of leader-election records kept in Endpoints, which are never mirrored.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
/// Annotations of the Endpoints that are not copied to the slices.
const NOT_COPIED: [&str; 2] = [
    LAST_CHANGE_TRIGGER_TIME,
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// A Service whose endpoints are written by hand.
fn selector_less(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_none_or(BTreeMap::is_empty)
}

/// Whether `ep` may be mirrored at all (its Service is checked separately).
pub fn should_mirror(ep: &Endpoints) -> bool {
    ep.labels().get(LABEL_SKIP_MIRROR).map(String::as_str) != Some("true")
        && !ep.annotations().contains_key(LEADER_ANNOTATION)
}

fn owner_reference(ep: &Endpoints) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Endpoints".into(),
        name: ep.name_any(),
        uid: ep.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The mirrored slice of `ep` for `ports` and `family`, holding `endpoints`.
fn mirrored_slice(
    ep: &Endpoints,
    ports: &[EndpointPort],
    family: Family,
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let mut labels = ep.labels().clone();
    labels.insert(LABEL_SERVICE_NAME.into(), ep.name_any());
    labels.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    let annotations: BTreeMap<String, String> = ep
        .annotations()
        .iter()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ep.name_any())),
            namespace: ep.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            owner_references: Some(vec![owner_reference(ep)]),
            ..ObjectMeta::default()
        },
        address_type: family.address_type().into(),
        endpoints,
        ports: Some(ports.to_vec()),
    }
}

/// The slice endpoint of an Endpoints address, if its IP is valid.
fn address_endpoint(address: &EndpointAddress, ready: bool) -> Option<(Family, Endpoint)> {
    let (family, ip) = canonical_ip(&address.ip)?;
    let endpoint = Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..EndpointConditions::default()
        }),
        target_ref: address.target_ref.clone(),
        node_name: address.node_name.clone(),
        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
        ..Endpoint::default()
    };
    Some((family, endpoint))
}

/// Whether `slice` already holds what `wanted` does: the same endpoints (in any order),
/// labels and annotations.
fn same_content(slice: &EndpointSlice, wanted: &EndpointSlice) -> bool {
    let by_key = |s: &EndpointSlice| -> BTreeMap<_, Endpoint> {
        s.endpoints
            .iter()
            .map(|e| (endpoint_key(e), e.clone()))
            .collect()
    };
    let (have, want) = (by_key(slice), by_key(wanted));
    have.len() == slice.endpoints.len()
        && have.len() == want.len()
        && have
            .iter()
            .all(|(k, e)| want.get(k).is_some_and(|w| same_endpoint(e, w)))
        && slice.labels() == wanted.labels()
        && slice.annotations() == wanted.annotations()
}

/// The slices that mirror `ep` given its `existing` mirrored slices: one per port set and
/// address family, the first existing slice of each reused, the others deleted.
pub fn mirror_slices<S: Borrow<EndpointSlice>>(
    ep: &Endpoints,
    existing: &[S],
    max_per_subset: usize,
) -> SlicePlan {
    type Group = (Vec<EndpointPort>, BTreeMap<super::EndpointKey, Endpoint>);
    let mut desired: BTreeMap<(Family, super::PortsKey), Group> = BTreeMap::new();
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let key = ports_key(Some(&ports));
        let addresses = subset.addresses.iter().flatten().map(|a| (a, true)).chain(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, false)),
        );
        let mut taken = 0;
        for (address, ready) in addresses {
            if taken >= max_per_subset {
                tracing::debug!(
                    endpoints = ep.name_any(),
                    "addresses over the per-subset maximum are not mirrored"
                );
                break;
            }
            let Some((family, endpoint)) = address_endpoint(address, ready) else {
                tracing::debug!(
                    endpoints = ep.name_any(),
                    ip = address.ip,
                    "invalid address is not mirrored"
                );
                continue;
            };
            taken += 1;
            let group = desired
                .entry((family, key.clone()))
                .or_insert_with(|| (ports.clone(), BTreeMap::new()));
            group.1.insert(endpoint_key(&endpoint), endpoint);
        }
    }
    let mut by_key: BTreeMap<(Family, super::PortsKey), Vec<&EndpointSlice>> = BTreeMap::new();
    let mut plan = SlicePlan::default();
    for slice in existing.iter().map(Borrow::borrow) {
        match Family::named(&slice.address_type) {
            Some(family) => by_key
                .entry((family, ports_key(slice.ports.as_deref())))
                .or_default()
                .push(slice),
            None => plan.delete.push(slice.clone()),
        }
    }
    for ((family, key), (ports, endpoints)) in desired {
        let endpoints: Vec<Endpoint> = endpoints.into_values().take(max_per_subset).collect();
        let mut wanted = mirrored_slice(ep, &ports, family, endpoints);
        match by_key
            .remove(&(family, key))
            .unwrap_or_default()
            .split_first()
        {
            None => plan.create.push(wanted),
            Some((first, rest)) => {
                plan.delete.extend(rest.iter().map(|s| (*s).clone()));
                if !same_content(first, &wanted) {
                    wanted.metadata.name = first.metadata.name.clone();
                    wanted.metadata.resource_version = first.metadata.resource_version.clone();
                    plan.update.push(wanted);
                }
            }
        }
    }
    for slices in by_key.into_values() {
        plan.delete.extend(slices.into_iter().cloned());
    }
    plan.recycle(|_| true);
    plan
}

// ---------------------------------------------------------------------------------------
// The controller
// ---------------------------------------------------------------------------------------

struct Context {
    client: Client,
    services: Store<Service>,
    endpoints: Store<Endpoints>,
    slices: Store<EndpointSlice>,
    expectations: Expectations,
}

/// Runs the mirroring controller until a watch or the reconciler stops.
pub async fn run(client: Client) -> Result<()> {
    let (services, services_writer) = reflector::store();
    let (endpoints, endpoints_writer) = reflector::store();
    let (slices, slices_writer) = reflector::store();
    let ctx = Arc::new(Context {
        client: client.clone(),
        services,
        endpoints,
        slices,
        expectations: Expectations::default(),
    });
    let (tx, rx) = mpsc::unbounded::<ObjectRef<Endpoints>>();
    let everything = |ctx: &Context, tx: &mpsc::UnboundedSender<ObjectRef<Endpoints>>| {
        for ep in ctx.endpoints.state() {
            enqueue(tx, ObjectRef::from_obj(ep.as_ref()));
        }
    };

    let watch_endpoints = drive(
        Api::<Endpoints>::all(client.clone()),
        watcher::Config::default(),
        endpoints_writer,
        {
            let (ctx, tx) = (ctx.clone(), tx.clone());
            move |seen| match seen {
                Seen::Applied { new, .. } => enqueue(&tx, ObjectRef::from_obj(new)),
                Seen::Deleted(_) => {}
                Seen::Listed => everything(&ctx, &tx),
            }
        },
    );
    let watch_services = drive(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        services_writer,
        {
            let (ctx, tx) = (ctx.clone(), tx.clone());
            move |seen| match seen {
                Seen::Applied { old, new } => {
                    if old.is_none_or(|old| selector_less(&old) != selector_less(new)) {
                        enqueue(&tx, same_name(new));
                    }
                }
                Seen::Deleted(svc) => enqueue(&tx, same_name(svc)),
                Seen::Listed => everything(&ctx, &tx),
            }
        },
    );
    let mirrored =
        watcher::Config::default().labels(&format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME}"));
    let watch_slices = drive(
        Api::<EndpointSlice>::all(client),
        mirrored,
        slices_writer,
        {
            let ctx = ctx.clone();
            move |seen| match ctx.expectations.route(seen) {
                SliceRoute::Echo => {}
                SliceRoute::Owner(ep) => enqueue(&tx, ep),
                SliceRoute::Everything => everything(&ctx, &tx),
            }
        },
    );

    let mirrors = controller::applier(
        |ep, ctx| Box::pin(mirror(ep, ctx)),
        |_, err, _| error_policy(err),
        ctx.clone(),
        ctx.endpoints.clone(),
        queue(rx),
        controller::Config::default().concurrency(WORKERS),
    );
    tokio::select! {
        () = watch_endpoints => Err(Error::WatchEnded("endpoints")),
        () = watch_services => Err(Error::WatchEnded("services")),
        () = watch_slices => Err(Error::WatchEnded("endpointslices")),
        () = report("endpointslice mirroring", mirrors) => Err(Error::Stopped("endpointslice mirroring")),
    }
}

/// Brings the mirrored slices of one Endpoints object in line with it.
#[tracing::instrument(
    skip_all,
    fields(namespace = %ep.namespace().unwrap_or_default(), endpoints = %ep.name_any())
)]
async fn mirror(ep: Arc<Endpoints>, ctx: Arc<Context>) -> Result<Action> {
    ctx.services
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone("services"))?;
    ctx.slices
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone("endpointslices"))?;
    let Some(ns) = ep.namespace() else {
        return Ok(Action::await_change());
    };
    let name = ep.name_any();
    if ctx.expectations.waiting(&ns, &name) {
        tracing::trace!("waiting for the cache to see earlier writes");
        return Ok(Action::requeue(STALE_CACHE_RETRY));
    }
    let existing = slices_of(&ctx.slices, &ns, &name, CONTROLLER_NAME);
    let svc = ctx.services.get(&same_name(ep.as_ref()));
    let plan = if svc.is_some_and(|svc| selector_less(&svc)) && should_mirror(&ep) {
        mirror_slices(&ep, &existing, MAX_ENDPOINTS_PER_SUBSET)
    } else {
        SlicePlan {
            delete: existing.iter().map(|s| s.as_ref().clone()).collect(),
            ..SlicePlan::default()
        }
    };
    if plan.is_empty() {
        return Ok(Action::await_change());
    }
    let writer = SliceWriter {
        api: Api::namespaced(ctx.client.clone(), &ns),
        store: &ctx.slices,
        expectations: &ctx.expectations,
        owner: &name,
        field_manager: FIELD_MANAGER,
    };
    writer
        .write(plan, ep.metadata.deletion_timestamp.is_none())
        .await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpointslice::tests::{apply, render_plan};
    use serde_json::{json, Value};

    fn endpoints(subsets: Value) -> Endpoints {
        serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "default", "uid": "ep-uid",
                         "labels": {"app": "db"},
                         "annotations": {"note": "by hand", LAST_CHANGE_TRIGGER_TIME: "2024-01-01T00:00:00Z"}},
            "subsets": subsets,
        }))
        .expect("endpoints")
    }

    #[track_caller]
    fn check(ep: &Endpoints, existing: &[EndpointSlice], expected: &str) {
        assert_eq!(
            render_plan(&mirror_slices(ep, existing, MAX_ENDPOINTS_PER_SUBSET)),
            expected.trim()
        );
    }

    fn two_subsets() -> Endpoints {
        endpoints(json!([
            {"addresses": [{"ip": "192.168.0.10"}, {"ip": "not-an-ip"}],
             "notReadyAddresses": [{"ip": "192.168.0.11"}],
             "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]},
            {"addresses": [{"ip": "192.168.0.12"}], "ports": [{"name": "admin", "port": 8080, "protocol": "TCP"}]},
        ]))
    }

    #[test]
    fn each_subset_becomes_a_slice_and_invalid_ips_are_skipped() {
        check(
            &two_subsets(),
            &[],
            "
create IPv4 [admin:8080/TCP] 192.168.0.12():R--
create IPv4 [sql:5432/TCP] 192.168.0.10():R-- 192.168.0.11():---",
        );
    }

    #[test]
    fn mirrored_slices_are_owned_by_and_labelled_after_the_endpoints() {
        let plan = mirror_slices(
            &two_subsets(),
            &[] as &[EndpointSlice],
            MAX_ENDPOINTS_PER_SUBSET,
        );
        let meta = serde_json::to_value(&plan.create[0].metadata).expect("json");
        assert_eq!(
            meta,
            json!({
                "generateName": "db-",
                "namespace": "default",
                "labels": {"app": "db", LABEL_SERVICE_NAME: "db", LABEL_MANAGED_BY: CONTROLLER_NAME},
                "annotations": {"note": "by hand"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Endpoints", "name": "db", "uid": "ep-uid",
                                     "controller": true, "blockOwnerDeletion": true}],
            })
        );
    }

    #[test]
    fn mirrored_slices_are_rewritten_only_when_the_endpoints_change() {
        let ep = two_subsets();
        let mut stored = Vec::new();
        apply(
            &mut stored,
            &mirror_slices(&ep, &[] as &[EndpointSlice], MAX_ENDPOINTS_PER_SUBSET),
        );
        check(&ep, &stored, "");
        let changed = endpoints(json!([
            {"addresses": [{"ip": "192.168.0.10"}, {"ip": "192.168.0.11"}],
             "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]},
        ]));
        check(
            &changed,
            &stored,
            "
update db-1001 IPv4 [sql:5432/TCP] 192.168.0.10():R-- 192.168.0.11():R--
delete db-1000 IPv4 [admin:8080/TCP] 192.168.0.12():R--",
        );
        // A new port set replaces the old one in the same slice rather than churning.
        let moved = endpoints(json!([
            {"addresses": [{"ip": "192.168.0.10"}], "ports": [{"name": "sql", "port": 6432, "protocol": "TCP"}]},
        ]));
        let plan = mirror_slices(&moved, &stored, MAX_ENDPOINTS_PER_SUBSET);
        assert!(plan.create.is_empty(), "{}", render_plan(&plan));
        assert_eq!((plan.update.len(), plan.delete.len()), (1, 1));
    }

    #[test]
    fn at_most_max_addresses_of_a_subset_are_mirrored() {
        let addresses: Vec<Value> = (1..=5)
            .map(|i| json!({"ip": format!("192.168.0.{i}")}))
            .collect();
        let ep = endpoints(
            json!([{"addresses": addresses, "ports": [{"port": 80, "protocol": "TCP"}]}]),
        );
        let plan = mirror_slices(&ep, &[] as &[EndpointSlice], 3);
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.create[0].endpoints.len(), 3);
    }

    #[test]
    fn skip_mirror_and_leader_election_opt_out() {
        assert!(should_mirror(&two_subsets()));
        let mut skipped = two_subsets();
        skipped
            .labels_mut()
            .insert(LABEL_SKIP_MIRROR.into(), "true".into());
        assert!(!should_mirror(&skipped));
        let mut leader = two_subsets();
        leader
            .annotations_mut()
            .insert(LEADER_ANNOTATION.into(), "{}".into());
        assert!(!should_mirror(&leader));
    }
}
