//! The garbage collector: ownerReference cascades, as the controller-manager's
//! garbage collector runs them, over every resource the apiserver serves (found by
//! discovery; Events are left out, as upstream's default ignores them).
//!
//! A graph of objects by uid, with each owner's dependents, is kept from one watch per
//! resource. A work queue (each uid at most once at a time) then applies the rules:
//! - a dependent whose owners are all gone is deleted, with background propagation
//!   unless its own finalizers ask otherwise; one that still has a live owner only loses
//!   the references to the owners that are gone. An owner missing from the graph is
//!   looked up through the API before anything is deleted;
//! - an owner being deleted with the `orphan` finalizer has its references removed from
//!   its dependents, then loses the finalizer;
//! - an owner being deleted with the `foregroundDeletion` finalizer has its dependents
//!   deleted, keeps the finalizer until those with `blockOwnerDeletion` are gone, then
//!   loses it (and the apiserver removes it).
//!
//! Resources are discovered once at start; a resource the apiserver starts serving
//! later is not watched. An owner reference to a kind the apiserver does not serve
//! keeps its dependent alive.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use thiserror::Error;
use tokio::sync::{watch, Notify};

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";
const FIELD_MANAGER: &str = "generic-garbage-collector";
const WORKERS: usize = 8;
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum Error {
    #[error("discovering the served resources: {0}")]
    Discovery(#[source] kube::Error),
    #[error("{action} {kind} {name}: {source}")]
    Api {
        action: &'static str,
        kind: String,
        name: String,
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An owner reference as the collector uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub block_owner_deletion: bool,
}

/// What the collector knows of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Index of the object's resource in the collector's resource list.
    pub resource: usize,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub owners: Vec<Owner>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Item {
    fn from_object(resource: usize, obj: &DynamicObject) -> Item {
        let owners = obj
            .owner_references()
            .iter()
            .map(|o| Owner {
                api_version: o.api_version.clone(),
                kind: o.kind.clone(),
                name: o.name.clone(),
                uid: o.uid.clone(),
                block_owner_deletion: o.block_owner_deletion.unwrap_or(false),
            })
            .collect();
        Item {
            resource,
            namespace: obj.namespace(),
            name: obj.name_any(),
            uid: obj.uid().unwrap_or_default(),
            resource_version: obj.resource_version().unwrap_or_default(),
            owners,
            deleting: obj.metadata.deletion_timestamp.is_some(),
            finalizers: obj.finalizers().to_vec(),
        }
    }

    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }

    /// The propagation its own finalizers ask for when the collector deletes it.
    fn own_policy(&self) -> Propagation {
        if self.has_finalizer(ORPHAN) {
            Propagation::Orphan
        } else if self.has_finalizer(FOREGROUND) {
            Propagation::Foreground
        } else {
            Propagation::Background
        }
    }
}

/// How a delete the collector issues propagates to the deleted object's dependents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl From<Propagation> for PropagationPolicy {
    fn from(p: Propagation) -> Self {
        match p {
            Propagation::Background => PropagationPolicy::Background,
            Propagation::Foreground => PropagationPolicy::Foreground,
            Propagation::Orphan => PropagationPolicy::Orphan,
        }
    }
}

/// Where one owner of a dependent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// Exists and is not waiting for its dependents.
    Solid,
    /// Gone, or replaced by an object of another uid.
    Dangling,
    /// Being deleted in the foreground: waits for its dependents to go.
    WaitingForDependents,
    /// Of a kind the apiserver does not serve: nothing can be said, so it counts as solid.
    Unresolvable,
}

/// What to do with a dependent, given its owners' states (in `item.owners` order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependentAction {
    Keep,
    /// Drop the references to these owner uids: another owner still holds the object.
    RemoveOwnerRefs(Vec<String>),
    Delete(Propagation),
}

/// The rules for a dependent, as upstream's `attemptToDeleteItem`.
pub fn decide_dependent(
    item: &Item,
    states: &[OwnerState],
    has_dependents: bool,
) -> DependentAction {
    if item.deleting || item.owners.is_empty() {
        return DependentAction::Keep;
    }
    let mut solid = false;
    let mut waiting = false;
    let mut dropped = Vec::new();
    for (owner, state) in item.owners.iter().zip(states) {
        match state {
            OwnerState::Solid | OwnerState::Unresolvable => solid = true,
            OwnerState::Dangling => dropped.push(owner.uid.clone()),
            OwnerState::WaitingForDependents => {
                waiting = true;
                dropped.push(owner.uid.clone());
            }
        }
    }
    if dropped.is_empty() {
        DependentAction::Keep
    } else if solid {
        DependentAction::RemoveOwnerRefs(dropped)
    } else if waiting && has_dependents {
        DependentAction::Delete(Propagation::Foreground)
    } else {
        DependentAction::Delete(item.own_policy())
    }
}

/// What to do for an owner that is being deleted with one of the collector's finalizers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerAction {
    /// Dependents (uids) to take the reference to the owner out of.
    pub orphan: Vec<String>,
    /// Dependents (uids) to delete, and how.
    pub delete: Vec<(String, Propagation)>,
    /// The finalizer to remove once the steps above are done.
    pub remove_finalizer: Option<&'static str>,
}

/// The rules for an owner being deleted; `dependents` pairs each dependent with whether
/// it has dependents of its own.
pub fn decide_owner(owner: &Item, dependents: &[(&Item, bool)]) -> OwnerAction {
    let mut action = OwnerAction::default();
    if !owner.deleting {
        return action;
    }
    if owner.has_finalizer(ORPHAN) {
        action.orphan = dependents.iter().map(|(d, _)| d.uid.clone()).collect();
        action.remove_finalizer = Some(ORPHAN);
    } else if owner.has_finalizer(FOREGROUND) {
        let mut blocked = false;
        for (dep, has_dependents) in dependents {
            if !dep.deleting {
                let policy = if *has_dependents {
                    Propagation::Foreground
                } else {
                    dep.own_policy()
                };
                action.delete.push((dep.uid.clone(), policy));
            }
            blocked |= dep
                .owners
                .iter()
                .any(|o| o.uid == owner.uid && o.block_owner_deletion);
        }
        if !blocked {
            action.remove_finalizer = Some(FOREGROUND);
        }
    }
    action
}

/// Objects by uid and, for every uid referenced as an owner, the uids referencing it.
#[derive(Debug, Default)]
pub struct Graph {
    items: HashMap<String, Item>,
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    /// Records `item`; returns the uids worth processing because of the change.
    pub fn upsert(&mut self, item: Item) -> Vec<String> {
        let mut work = Vec::new();
        let old = self.items.get(&item.uid);
        let owners_changed = old.is_none_or(|o| o.owners != item.owners);
        if owners_changed && !item.owners.is_empty() {
            work.push(item.uid.clone());
        }
        if item.deleting && (item.has_finalizer(ORPHAN) || item.has_finalizer(FOREGROUND)) {
            work.push(item.uid.clone());
        }
        if let Some(old) = old {
            for gone in old.owners.iter().filter(|o| !item.owners.contains(o)) {
                if let Some(deps) = self.dependents.get_mut(&gone.uid) {
                    deps.remove(&item.uid);
                }
                work.push(gone.uid.clone());
            }
        }
        for owner in &item.owners {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(item.uid.clone());
        }
        self.items.insert(item.uid.clone(), item);
        work.dedup();
        work
    }

    /// Forgets `uid`; returns its dependents and owners, which may have work now.
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let Some(item) = self.items.remove(uid) else {
            return Vec::new();
        };
        let mut work: Vec<String> = self
            .dependents
            .get(uid)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for owner in &item.owners {
            if let Some(deps) = self.dependents.get_mut(&owner.uid) {
                deps.remove(uid);
                if deps.is_empty() && !self.items.contains_key(&owner.uid) {
                    self.dependents.remove(&owner.uid);
                }
            }
            work.push(owner.uid.clone());
        }
        if self.dependents.get(uid).is_some_and(BTreeSet::is_empty) {
            self.dependents.remove(uid);
        }
        work
    }

    pub fn get(&self, uid: &str) -> Option<&Item> {
        self.items.get(uid)
    }

    /// The objects that reference `uid` as an owner.
    pub fn dependents_of(&self, uid: &str) -> Vec<&Item> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.items.get(d))
            .collect()
    }

    pub fn has_dependents(&self, uid: &str) -> bool {
        !self.dependents_of(uid).is_empty()
    }

    /// The state of an owner the graph holds; `None` when it does not know the uid.
    fn owner_state(&self, owner: &Owner) -> Option<OwnerState> {
        self.items
            .get(&owner.uid)
            .map(|o| state_of(o.deleting, &o.finalizers))
    }
}

fn state_of(deleting: bool, finalizers: &[String]) -> OwnerState {
    if deleting && finalizers.iter().any(|f| f == FOREGROUND) {
        OwnerState::WaitingForDependents
    } else {
        OwnerState::Solid
    }
}

/// One served resource.
#[derive(Debug, Clone)]
struct Resource {
    ar: ApiResource,
    namespaced: bool,
}

/// uids waiting to be processed; a uid is handed to one worker at a time, and a uid
/// added while it is being processed is processed again afterwards.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Notify,
}

#[derive(Default)]
struct QueueState {
    order: VecDeque<String>,
    queued: HashSet<String>,
    busy: HashSet<String>,
    again: HashSet<String>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, uid: String) {
        let mut s = self.lock();
        if s.busy.contains(&uid) {
            s.again.insert(uid);
        } else if s.queued.insert(uid.clone()) {
            s.order.push_back(uid);
            drop(s);
            self.ready.notify_one();
        }
    }

    async fn next(&self) -> String {
        loop {
            let notified = self.ready.notified();
            {
                let mut s = self.lock();
                if let Some(uid) = s.order.pop_front() {
                    s.queued.remove(&uid);
                    s.busy.insert(uid.clone());
                    if !s.order.is_empty() {
                        self.ready.notify_one();
                    }
                    return uid;
                }
            }
            notified.await;
        }
    }

    fn done(&self, uid: &str) {
        let again = {
            let mut s = self.lock();
            s.busy.remove(uid);
            s.again.remove(uid)
        };
        if again {
            self.add(uid.to_string());
        }
    }
}

struct Ctx {
    client: Client,
    resources: Vec<Resource>,
    graph: Mutex<Graph>,
    queue: Queue,
}

impl Ctx {
    fn graph(&self) -> MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&self, uids: Vec<String>) {
        for uid in uids {
            self.queue.add(uid);
        }
    }

    fn api(&self, resource: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = &self.resources[resource].ar;
        match namespace {
            Some(ns) if self.resources[resource].namespaced => {
                Api::namespaced_with(self.client.clone(), ns, ar)
            }
            _ => Api::all_with(self.client.clone(), ar),
        }
    }

    /// The resource serving `api_version`/`kind`, by group and kind.
    fn resource_of(&self, api_version: &str, kind: &str) -> Option<usize> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        self.resources
            .iter()
            .position(|r| r.ar.group == group && r.ar.kind == kind)
    }

    /// An owner the graph does not know, looked up through the API.
    async fn lookup(&self, item: &Item, owner: &Owner) -> Result<OwnerState> {
        let Some(resource) = self.resource_of(&owner.api_version, &owner.kind) else {
            return Ok(OwnerState::Unresolvable);
        };
        if self.resources[resource].namespaced && item.namespace.is_none() {
            return Ok(OwnerState::Dangling);
        }
        let api = self.api(resource, item.namespace.as_deref());
        let found = api
            .get_opt(&owner.name)
            .await
            .map_err(|source| Error::Api {
                action: "looking up",
                kind: owner.kind.clone(),
                name: owner.name.clone(),
                source,
            })?;
        Ok(match found {
            Some(obj) if obj.uid().as_deref() == Some(owner.uid.as_str()) => {
                state_of(obj.metadata.deletion_timestamp.is_some(), obj.finalizers())
            }
            _ => OwnerState::Dangling,
        })
    }

    async fn delete(&self, item: &Item, propagation: Propagation) -> Result<()> {
        let params = DeleteParams {
            propagation_policy: Some(propagation.into()),
            preconditions: Some(Preconditions {
                uid: Some(item.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let api = self.api(item.resource, item.namespace.as_deref());
        match api.delete(&item.name, &params).await {
            Ok(_) => {
                tracing::info!(kind = %self.resources[item.resource].ar.kind, name = %item.name, ?propagation, "deleted");
                Ok(())
            }
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
            Err(source) => Err(self.failed("deleting", item, source)),
        }
    }

    async fn remove_owner_refs(&self, item: &Item, owners: &[String]) -> Result<()> {
        let refs: Vec<_> = owners
            .iter()
            .map(|uid| json!({"$patch": "delete", "uid": uid}))
            .collect();
        let patch = json!({"metadata": {"ownerReferences": refs}});
        let api = self.api(item.resource, item.namespace.as_deref());
        match api
            .patch(&item.name, &self.params(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(self.failed("removing owner references from", item, source)),
        }
    }

    async fn remove_finalizer(&self, item: &Item, finalizer: &str) -> Result<()> {
        let rest: Vec<&String> = item.finalizers.iter().filter(|f| *f != finalizer).collect();
        let finalizers = if rest.is_empty() {
            json!(null)
        } else {
            json!(rest)
        };
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": item.resource_version,
        }});
        let api = self.api(item.resource, item.namespace.as_deref());
        match api
            .patch(&item.name, &self.params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(self.failed("removing a finalizer from", item, source)),
        }
    }

    fn params(&self) -> PatchParams {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        }
    }

    fn failed(&self, action: &'static str, item: &Item, source: kube::Error) -> Error {
        Error::Api {
            action,
            kind: self.resources[item.resource].ar.kind.clone(),
            name: item.name.clone(),
            source,
        }
    }
}

/// Applies the rules to the object `uid` in both its roles, owner and dependent.
#[tracing::instrument(skip(ctx))]
async fn process(ctx: &Ctx, uid: &str) -> Result<()> {
    let (item, owner_action, known) = {
        let graph = ctx.graph();
        let Some(item) = graph.get(uid).cloned() else {
            return Ok(());
        };
        let dependents: Vec<(&Item, bool)> = graph
            .dependents_of(uid)
            .into_iter()
            .map(|d| (d, graph.has_dependents(&d.uid)))
            .collect();
        let owner_action = decide_owner(&item, &dependents);
        let owner_action = (owner_action != OwnerAction::default()).then(|| {
            let targets: HashMap<String, Item> = dependents
                .iter()
                .map(|(d, _)| (d.uid.clone(), (*d).clone()))
                .collect();
            (owner_action, targets)
        });
        let known: Vec<Option<OwnerState>> =
            item.owners.iter().map(|o| graph.owner_state(o)).collect();
        (item, owner_action, known)
    };
    if let Some((action, targets)) = owner_action {
        for dep in action.orphan.iter().filter_map(|uid| targets.get(uid)) {
            ctx.remove_owner_refs(dep, std::slice::from_ref(&item.uid))
                .await?;
        }
        for (dep, policy) in &action.delete {
            if let Some(dep) = targets.get(dep) {
                ctx.delete(dep, *policy).await?;
            }
        }
        if let Some(finalizer) = action.remove_finalizer {
            ctx.remove_finalizer(&item, finalizer).await?;
        }
    }
    if item.deleting || item.owners.is_empty() {
        return Ok(());
    }
    let mut states = Vec::with_capacity(item.owners.len());
    for (owner, known) in item.owners.iter().zip(known) {
        states.push(match known {
            Some(state) => state,
            None => ctx.lookup(&item, owner).await?,
        });
    }
    let has_dependents = ctx.graph().has_dependents(uid);
    match decide_dependent(&item, &states, has_dependents) {
        DependentAction::Keep => Ok(()),
        DependentAction::RemoveOwnerRefs(uids) => ctx.remove_owner_refs(&item, &uids).await,
        DependentAction::Delete(policy) => ctx.delete(&item, policy).await,
    }
}

async fn worker(ctx: Arc<Ctx>) {
    loop {
        let uid = ctx.queue.next().await;
        if let Err(err) = process(&ctx, &uid).await {
            tracing::warn!(error = %err, %uid, "garbage collection");
            let ctx = ctx.clone();
            let retry = uid.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RETRY).await;
                ctx.queue.add(retry);
            });
        }
        ctx.queue.done(&uid);
    }
}

/// Keeps the graph in step with one resource; reports its first complete listing.
async fn follow(ctx: Arc<Ctx>, resource: usize, synced: watch::Sender<usize>) {
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ctx.resources[resource].ar);
    let mut listed: Option<HashSet<String>> = None;
    let mut first = true;
    let mut events = watcher(api, watcher::Config::default().streaming_lists())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(obj)) => {
                let work = ctx.graph().upsert(Item::from_object(resource, &obj));
                ctx.enqueue(work);
            }
            Ok(watcher::Event::Delete(obj)) => {
                let work = ctx.graph().remove(&obj.uid().unwrap_or_default());
                ctx.enqueue(work);
            }
            Ok(watcher::Event::Init) => listed = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(obj)) => {
                let item = Item::from_object(resource, &obj);
                if let Some(listed) = listed.as_mut() {
                    listed.insert(item.uid.clone());
                }
                let work = ctx.graph().upsert(item);
                ctx.enqueue(work);
            }
            Ok(watcher::Event::InitDone) => {
                let listed = listed.take().unwrap_or_default();
                let work: Vec<String> = {
                    let mut graph = ctx.graph();
                    let stale: Vec<String> = graph
                        .items
                        .values()
                        .filter(|i| i.resource == resource && !listed.contains(&i.uid))
                        .map(|i| i.uid.clone())
                        .collect();
                    stale.iter().flat_map(|uid| graph.remove(uid)).collect()
                };
                ctx.enqueue(work);
                if first {
                    first = false;
                    synced.send_modify(|n| *n += 1);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, kind = %ctx.resources[resource].ar.kind, "watching")
            }
        }
    }
}

/// The resources to collect in: every served, listable, watchable, patchable and
/// deletable one but Events.
/// Retries while the apiserver cannot answer; a refusal (4xx) is final.
async fn discover(client: &Client) -> Result<Vec<Resource>> {
    let mut delay = Duration::from_millis(200);
    let discovery = loop {
        match Discovery::new(client.clone()).run().await {
            Ok(d) => break d,
            Err(kube::Error::Api(s)) if (400..500).contains(&s.code) && s.code != 429 => {
                return Err(Error::Discovery(kube::Error::Api(s)));
            }
            Err(err) => {
                tracing::warn!(error = %err, "discovering the served resources, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let mut resources = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            let usable = [verbs::LIST, verbs::WATCH, verbs::DELETE, verbs::PATCH]
                .iter()
                .all(|v| caps.supports_operation(v));
            let events = ar.plural == "events" && matches!(ar.group.as_str(), "" | "events.k8s.io");
            if usable && !events {
                resources.push(Resource {
                    namespaced: caps.scope == Scope::Namespaced,
                    ar,
                });
            }
        }
    }
    Ok(resources)
}

/// Collects garbage until every resource watch ends.
pub async fn run(client: Client) -> Result<(), Error> {
    let resources = discover(&client).await?;
    tracing::info!(
        resources = %resources.iter().map(|r| r.ar.plural.as_str()).collect::<Vec<_>>().join(","),
        "garbage collector started"
    );
    let ctx = Arc::new(Ctx {
        client,
        resources,
        graph: Mutex::new(Graph::default()),
        queue: Queue::default(),
    });
    let (synced_tx, mut synced) = watch::channel(0usize);
    let watches = futures::future::join_all(
        (0..ctx.resources.len()).map(|i| follow(ctx.clone(), i, synced_tx.clone())),
    );
    drop(synced_tx);
    let total = ctx.resources.len();
    let workers = async {
        // Like upstream, act only once every resource has been listed.
        if synced.wait_for(|n| *n >= total).await.is_err() {
            return;
        }
        futures::future::join_all((0..WORKERS).map(|_| worker(ctx.clone()))).await;
    };
    tokio::select! {
        _ = watches => tracing::warn!("every resource watch ended"),
        () = workers => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An item from `name [deleting] [f:finalizer…] [owner:name[!]…]`; an owner's uid is
    /// its name, `!` marks blockOwnerDeletion.
    fn item(text: &str) -> Item {
        let mut words = text.split_whitespace();
        let name = words.next().unwrap_or_default().to_string();
        let mut item = Item {
            resource: 0,
            namespace: Some("default".into()),
            uid: name.clone(),
            name,
            resource_version: "1".into(),
            owners: Vec::new(),
            deleting: false,
            finalizers: Vec::new(),
        };
        for w in words {
            if w == "deleting" {
                item.deleting = true;
            } else if let Some(f) = w.strip_prefix("f:") {
                item.finalizers.push(f.to_string());
            } else if let Some(o) = w.strip_prefix("owner:") {
                let (name, block) = o.strip_suffix('!').map_or((o, false), |n| (n, true));
                item.owners.push(Owner {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: name.into(),
                    uid: name.into(),
                    block_owner_deletion: block,
                });
            } else {
                panic!("unknown item word {w}");
            }
        }
        item
    }

    fn state(word: &str) -> OwnerState {
        match word {
            "solid" => OwnerState::Solid,
            "gone" => OwnerState::Dangling,
            "waiting" => OwnerState::WaitingForDependents,
            "unknown-kind" => OwnerState::Unresolvable,
            other => panic!("unknown owner state {other}"),
        }
    }

    fn check_dependent(text: &str, states: &str, has_dependents: bool, expect: &str) {
        let states: Vec<OwnerState> = states.split_whitespace().map(state).collect();
        let got = format!(
            "{:?}",
            decide_dependent(&item(text), &states, has_dependents)
        );
        assert_eq!(got, expect, "{text} with owners {states:?}");
    }

    fn check_owner(owner: &str, dependents: &[&str], expect: &str) {
        let deps: Vec<Item> = dependents.iter().map(|d| item(d)).collect();
        let pairs: Vec<(&Item, bool)> = deps
            .iter()
            .map(|d| (d, d.name.starts_with("parent")))
            .collect();
        let got = format!("{:?}", decide_owner(&item(owner), &pairs));
        assert_eq!(got, expect, "{owner} with {dependents:?}");
    }

    #[test]
    fn dependents_of_vanished_owners_are_deleted() {
        check_dependent("c owner:a", "solid", false, "Keep");
        check_dependent("c owner:a", "gone", false, "Delete(Background)");
        check_dependent(
            "c owner:a owner:b",
            "gone gone",
            false,
            "Delete(Background)",
        );
        check_dependent("c f:orphan owner:a", "gone", false, "Delete(Orphan)");
        check_dependent(
            "c f:foregroundDeletion owner:a",
            "gone",
            true,
            "Delete(Foreground)",
        );
        check_dependent("c deleting owner:a", "gone", false, "Keep");
        check_dependent("c", "", false, "Keep");
    }

    #[test]
    fn a_live_owner_keeps_the_dependent_but_loses_the_dead_references() {
        check_dependent(
            "c owner:a owner:b",
            "solid gone",
            false,
            "RemoveOwnerRefs([\"b\"])",
        );
        check_dependent(
            "c owner:a owner:b",
            "waiting solid",
            false,
            "RemoveOwnerRefs([\"a\"])",
        );
        check_dependent(
            "c owner:a owner:b",
            "unknown-kind gone",
            false,
            "RemoveOwnerRefs([\"b\"])",
        );
        check_dependent("c owner:a", "unknown-kind", false, "Keep");
    }

    #[test]
    fn owners_deleted_in_the_foreground_take_their_dependents_first() {
        check_dependent("c owner:a", "waiting", false, "Delete(Background)");
        check_dependent("c owner:a", "waiting", true, "Delete(Foreground)");
        check_owner(
            "a deleting f:foregroundDeletion",
            &["b owner:a!", "c owner:a", "parent owner:a"],
            "OwnerAction { orphan: [], delete: [(\"b\", Background), (\"c\", Background), (\"parent\", Foreground)], remove_finalizer: None }",
        );
        check_owner(
            "a deleting f:foregroundDeletion",
            &["b deleting owner:a!"],
            "OwnerAction { orphan: [], delete: [], remove_finalizer: None }",
        );
        check_owner(
            "a deleting f:foregroundDeletion",
            &["c owner:a"],
            "OwnerAction { orphan: [], delete: [(\"c\", Background)], remove_finalizer: Some(\"foregroundDeletion\") }",
        );
        check_owner(
            "a deleting f:foregroundDeletion",
            &[],
            "OwnerAction { orphan: [], delete: [], remove_finalizer: Some(\"foregroundDeletion\") }",
        );
    }

    #[test]
    fn orphaning_owners_release_their_dependents() {
        check_owner(
            "a deleting f:orphan",
            &["b owner:a!", "c owner:a owner:z"],
            "OwnerAction { orphan: [\"b\", \"c\"], delete: [], remove_finalizer: Some(\"orphan\") }",
        );
        check_owner(
            "a f:orphan",
            &["b owner:a"],
            "OwnerAction { orphan: [], delete: [], remove_finalizer: None }",
        );
    }

    #[test]
    fn the_graph_reports_who_has_work_after_a_change() {
        let mut graph = Graph::default();
        assert_eq!(graph.upsert(item("a")), Vec::<String>::new());
        assert_eq!(graph.upsert(item("b owner:a")), vec!["b"]);
        assert_eq!(
            graph.upsert(item("b owner:a")),
            Vec::<String>::new(),
            "no change, no work"
        );
        assert_eq!(graph.upsert(item("c owner:a owner:b")), vec!["c"]);
        assert_eq!(graph.dependents_of("a").len(), 2);
        assert_eq!(
            graph.upsert(item("a deleting f:foregroundDeletion")),
            vec!["a"]
        );
        assert_eq!(
            graph.upsert(item("c owner:b")),
            vec!["c", "a"],
            "a dropped reference wakes the owner"
        );
        assert_eq!(
            graph.remove("b"),
            vec!["c", "a"],
            "dependents and owners of a removed object"
        );
        assert!(
            graph.has_dependents("b"),
            "c still references the removed b"
        );
        assert_eq!(
            graph.owner_state(&item("x owner:a").owners[0]),
            Some(OwnerState::WaitingForDependents)
        );
        assert_eq!(graph.owner_state(&item("x owner:b").owners[0]), None);
    }

    #[tokio::test]
    async fn the_queue_hands_a_uid_to_one_worker_at_a_time() {
        let queue = Queue::default();
        queue.add("a".into());
        queue.add("a".into());
        queue.add("b".into());
        assert_eq!(queue.next().await, "a");
        queue.add("a".into());
        assert_eq!(queue.next().await, "b", "a is busy: it waits");
        queue.done("a");
        assert_eq!(queue.next().await, "a", "added while busy: processed again");
        queue.done("a");
        queue.done("b");
        assert!(queue.lock().order.is_empty());
    }
}
