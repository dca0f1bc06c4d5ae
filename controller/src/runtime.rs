//! Watch and queue plumbing shared by the controllers built on kube-rs's `applier`:
//! a watch that keeps a reflector store and routes each event once the store has it
//! (or only wakes a loop: `watched_store`),
//! the reconcile queue, logging of reconcile results, retry timing and lock helpers.

use std::convert::Infallible;
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{future, Stream, StreamExt};
use kube::api::Api;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::{store::Writer, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A watch event after it reached the store.
pub(crate) enum Seen<'a, K> {
    /// Added or modified; `old` is what the store held before.
    Applied {
        old: Option<Arc<K>>,
        new: &'a K,
    },
    Deleted(&'a K),
    /// A (re)list completed: the store was replaced and deletions may have gone unseen.
    Listed,
}

/// Watches `api`, keeps `writer`'s store up to date and hands every event to `route`
/// once the store reflects it. Watch errors are logged and retried with backoff; this
/// returns only if the watch stream itself ends.
pub(crate) async fn drive<K>(
    api: Api<K>,
    config: watcher::Config,
    mut writer: Writer<K>,
    mut route: impl FnMut(Seen<'_, K>),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    let store = writer.as_reader();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(%err, %kind, "watch failed, retrying");
                continue;
            }
        };
        let old = match &event {
            watcher::Event::Apply(obj) => store.get(&ObjectRef::from_obj(obj)),
            _ => None,
        };
        writer.apply_watcher_event(&event);
        match &event {
            watcher::Event::Apply(new) => route(Seen::Applied { old, new }),
            watcher::Event::Delete(obj) => route(Seen::Deleted(obj)),
            watcher::Event::InitDone => route(Seen::Listed),
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }
}

/// A store of every `K` the client sees, kept up to date by [`drive`] in the
/// background; `changed` is called after each event the store reflects. Ready once
/// its first list arrived (`wait_until_ready`).
pub(crate) fn watched_store<K>(
    client: kube::Client,
    changed: impl Fn() + Send + 'static,
) -> kube::runtime::reflector::Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = kube::runtime::reflector::store::<K>();
    tokio::spawn(drive(
        Api::<K>::all(client),
        watcher::Config::default(),
        writer,
        move |_| changed(),
    ));
    store
}

/// Queues a reconcile; a closed queue means the controller is stopping anyway.
pub(crate) fn enqueue<K: Resource>(queue: &mpsc::UnboundedSender<ObjectRef<K>>, obj: ObjectRef<K>)
where
    K::DynamicType: Eq + Hash + Clone,
{
    if queue.unbounded_send(obj).is_err() {
        tracing::debug!("reconcile queue closed");
    }
}

/// The reference to the object of kind `B` named like `obj`, in its namespace.
pub(crate) fn same_name<A: Resource, B: Resource<DynamicType = ()>>(obj: &A) -> ObjectRef<B> {
    let r = ObjectRef::new(&obj.name_any());
    match obj.namespace() {
        Some(ns) => r.within(&ns),
        None => r,
    }
}

/// The queue of reconciles as the stream `applier` takes.
pub(crate) fn queue<K: Resource>(
    rx: mpsc::UnboundedReceiver<ObjectRef<K>>,
) -> impl Stream<Item = Result<ObjectRef<K>, Infallible>>
where
    K::DynamicType: Eq + Hash + Clone,
{
    rx.map(Ok)
}

/// Consumes an applier's results, logging failures (a write that lost a race with the
/// cache only at debug level); returns when the applier stops.
pub(crate) async fn report<K, E, Q>(
    name: &'static str,
    results: impl Stream<Item = Result<(ObjectRef<K>, Action), controller::Error<E, Q>>>,
) where
    K: Resource,
    K::DynamicType: Eq + Hash + Clone,
    E: std::error::Error + 'static,
    Q: std::error::Error + 'static,
{
    results
        .for_each(|result| {
            match result {
                Ok(_) => {}
                Err(controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(controller = name, %obj, "object gone before its reconcile");
                }
                Err(controller::Error::ReconcilerFailed(err, obj)) if lost_race(&err) => {
                    tracing::debug!(controller = name, %obj, %err, "cache behind a write, retrying");
                }
                Err(err) => tracing::warn!(controller = name, %err, "reconcile failed"),
            }
            future::ready(())
        })
        .await;
}

/// A conflict or an "already exists": the cache was behind the apiserver.
fn stale(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.is_conflict() || status.is_already_exists())
}

/// Whether a reconcile failed because its cache was behind (its source is such an error).
fn lost_race(err: &(dyn std::error::Error + 'static)) -> bool {
    err.source()
        .and_then(|source| source.downcast_ref::<kube::Error>())
        .is_some_and(stale)
}

/// How soon a failed reconcile is retried: when the cache was behind, as soon as it
/// has likely caught up; otherwise later.
pub(crate) fn retry_after(err: &kube::Error) -> Action {
    if stale(err) {
        Action::requeue(Duration::from_millis(200))
    } else {
        Action::requeue(Duration::from_secs(5))
    }
}
