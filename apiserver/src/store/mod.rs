//! Storage: a revisioned key-value backend behind a trait, and the `Store` that turns
//! it into what the handlers need — atomic multi-key transactions with one new
//! revision each, consistent lists, and a history of changes that watches resume from
//! and lists read past revisions from (as etcd serves a range at a revision until it
//! is compacted).
//!
//! **Invariant:** only this module knows the storage backend; handlers see `Store`.
//! **Invariant:** a write is acknowledged only after the backend made it durable.

mod sled_backend;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{broadcast, RwLock};

pub use sled_backend::SledBackend;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend: {0}")]
    Backend(String),
    #[error("corrupt object at {key}: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    /// A read at a revision the history no longer reaches back to.
    #[error("required revision {requested} has been compacted; the oldest readable is {oldest}")]
    Compacted { requested: u64, oldest: u64 },
    /// A read at a revision not yet written.
    #[error("required revision {requested} is a future revision; the current is {current}")]
    FutureRevision { requested: u64, current: u64 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One change in a commit.
#[derive(Debug, Clone)]
pub enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

/// A durable, revisioned key-value store (sled today; etcd would fit the same shape).
pub trait Backend: Send + Sync + 'static {
    /// The revision of the last commit (0 for an empty store).
    fn revision(&self) -> Result<u64>;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Every key under `prefix`, in key order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;
    /// Applies `ops` and records `revision` atomically; returns once durable.
    fn commit(&self, revision: u64, ops: &[Op]) -> Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A committed change to one object.
#[derive(Debug)]
pub struct Event {
    pub kind: EventType,
    pub key: String,
    /// The object after the change (for a deletion: its last state).
    pub object: Arc<Value>,
    /// The object before the change, so filtered watches can tell an object leaving
    /// their selection from one changing inside it.
    pub previous: Option<Arc<Value>>,
    pub revision: u64,
}

/// How many past events a watch can resume from and a list can read back through.
const HISTORY: usize = 20_000;

pub struct Store {
    backend: Box<dyn Backend>,
    /// The current revision; writers hold it exclusively for a whole transaction.
    revision: RwLock<u64>,
    history: Mutex<History>,
    events: broadcast::Sender<Arc<Event>>,
}

struct History {
    /// Events after `start` are all in `events`.
    start: u64,
    events: VecDeque<Arc<Event>>,
    /// The most events kept.
    limit: usize,
}

/// What a new watch starts from: the events it missed, then the live feed.
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub live: broadcast::Receiver<Arc<Event>>,
    pub revision: u64,
}

/// The watch asked for a revision older than the history keeps.
#[derive(Debug)]
pub struct TooOld {
    pub requested: u64,
    pub oldest: u64,
}

impl Store {
    pub fn new(backend: Box<dyn Backend>) -> Result<Self> {
        Store::with_history(backend, HISTORY)
    }

    /// A store that keeps the last `limit` events for watches and past reads.
    pub fn with_history(backend: Box<dyn Backend>, limit: usize) -> Result<Self> {
        let revision = backend.revision()?;
        let (events, _) = broadcast::channel(8192);
        Ok(Store {
            backend,
            revision: RwLock::new(revision),
            history: Mutex::new(History {
                start: revision,
                events: VecDeque::new(),
                limit: limit.max(1),
            }),
            events,
        })
    }

    pub async fn revision(&self) -> u64 {
        *self.revision.read().await
    }

    pub async fn get(&self, key: &str) -> Result<Option<Value>> {
        let _guard = self.revision.read().await;
        self.get_unlocked(key)
    }

    /// Objects under `prefix` and the revision they are consistent with.
    pub async fn list(&self, prefix: &str) -> Result<(u64, Vec<Value>)> {
        let guard = self.revision.read().await;
        let items = self.list_unlocked(prefix)?;
        Ok((*guard, items))
    }

    /// Objects under `prefix` with their keys, in key order, as they were at revision
    /// `at` (the current revision when `None`), and the revision read. A past revision
    /// is rebuilt from the current objects by undoing the history's later events, so
    /// it can be read while the history reaches back to it.
    pub async fn list_at(
        &self,
        prefix: &str,
        at: Option<u64>,
    ) -> Result<(u64, BTreeMap<String, Value>)> {
        let guard = self.revision.read().await;
        let current = *guard;
        let mut items: BTreeMap<String, Value> = self
            .backend
            .list(prefix)?
            .into_iter()
            .map(|(key, bytes)| decode(&key, &bytes).map(|v| (key, v)))
            .collect::<Result<_>>()?;
        let at = match at {
            Some(at) if at > current => {
                return Err(StoreError::FutureRevision {
                    requested: at,
                    current,
                })
            }
            Some(at) if at < current => at,
            _ => return Ok((current, items)),
        };
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if at < history.start {
            return Err(StoreError::Compacted {
                requested: at,
                oldest: history.start,
            });
        }
        for event in history.events.iter().rev() {
            if event.revision <= at {
                break;
            }
            if !event.key.starts_with(prefix) {
                continue;
            }
            match (&event.kind, &event.previous) {
                (EventType::Added, _) | (_, None) => items.remove(&event.key),
                (EventType::Modified | EventType::Deleted, Some(before)) => {
                    items.insert(event.key.clone(), (**before).clone())
                }
            };
        }
        Ok((at, items))
    }

    fn get_unlocked(&self, key: &str) -> Result<Option<Value>> {
        self.backend
            .get(key)?
            .map(|bytes| decode(key, &bytes))
            .transpose()
    }

    fn list_unlocked(&self, prefix: &str) -> Result<Vec<Value>> {
        self.backend
            .list(prefix)?
            .into_iter()
            .map(|(k, v)| decode(&k, &v))
            .collect()
    }

    /// Runs `f` as one transaction: it sees a consistent store, its writes commit
    /// together under one new revision, and nothing is written if it fails.
    pub async fn write<T, E>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut guard = self.revision.write().await;
        let next = *guard + 1;
        let mut txn = Txn {
            store: self,
            revision: next,
            writes: BTreeMap::new(),
        };
        let out = f(&mut txn)?;
        if txn.writes.is_empty() {
            return Ok(out);
        }
        let writes = std::mem::take(&mut txn.writes);
        let mut ops = Vec::with_capacity(writes.len());
        let mut events = Vec::with_capacity(writes.len());
        for (key, write) in writes {
            let previous = self.get_unlocked(&key)?.map(Arc::new);
            match write {
                Some(object) => {
                    let bytes = serde_json::to_vec(&object)
                        .map_err(|e| StoreError::Backend(e.to_string()))?;
                    ops.push(Op::Put(key.clone(), bytes));
                    let kind = if previous.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    events.push(Event {
                        kind,
                        key,
                        object: Arc::new(object),
                        previous,
                        revision: next,
                    });
                }
                None => {
                    let Some(last) = previous else { continue };
                    ops.push(Op::Delete(key.clone()));
                    let mut object = (*last).clone();
                    set_resource_version(&mut object, next);
                    events.push(Event {
                        kind: EventType::Deleted,
                        key,
                        object: Arc::new(object),
                        previous: Some(last),
                        revision: next,
                    });
                }
            }
        }
        if ops.is_empty() {
            return Ok(out);
        }
        tokio::task::block_in_place(|| self.backend.commit(next, &ops))?;
        *guard = next;
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            let event = Arc::new(event);
            if history.events.len() >= history.limit {
                if let Some(old) = history.events.pop_front() {
                    history.start = old.revision;
                }
            }
            history.events.push_back(event.clone());
            // Nobody listening is fine: the history keeps the event.
            let _ = self.events.send(event);
        }
        Ok(out)
    }

    /// Starts a watch after revision `from`.
    pub async fn subscribe(&self, from: u64) -> std::result::Result<Subscription, TooOld> {
        let guard = self.revision.read().await;
        let live = self.events.subscribe();
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        if from < history.start {
            return Err(TooOld {
                requested: from,
                oldest: history.start + 1,
            });
        }
        let backlog = history
            .events
            .iter()
            .filter(|e| e.revision > from)
            .cloned()
            .collect();
        Ok(Subscription {
            backlog,
            live,
            revision: *guard,
        })
    }

    /// Lists `prefix` and starts a watch from the same revision, atomically.
    pub async fn list_and_subscribe(&self, prefix: &str) -> Result<(Vec<Value>, Subscription)> {
        let guard = self.revision.read().await;
        let items = self.list_unlocked(prefix)?;
        let live = self.events.subscribe();
        Ok((
            items,
            Subscription {
                backlog: Vec::new(),
                live,
                revision: *guard,
            },
        ))
    }
}

/// A transaction in progress (see [`Store::write`]).
pub struct Txn<'a> {
    store: &'a Store,
    revision: u64,
    writes: BTreeMap<String, Option<Value>>,
}

impl Txn<'_> {
    /// The revision this transaction commits as.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn get(&self, key: &str) -> Result<Option<Value>> {
        match self.writes.get(key) {
            Some(write) => Ok(write.clone()),
            None => self.store.get_unlocked(key),
        }
    }

    pub fn list(&self, prefix: &str) -> Result<Vec<Value>> {
        let mut merged: BTreeMap<String, Value> = BTreeMap::new();
        for (key, bytes) in self.store.backend.list(prefix)? {
            let value = decode(&key, &bytes)?;
            merged.insert(key, value);
        }
        for (key, write) in self.writes.range(prefix.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            match write {
                Some(v) => merged.insert(key.clone(), v.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_values().collect())
    }

    /// Stores `object` under `key`, stamping the transaction's resourceVersion.
    pub fn put(&mut self, key: &str, mut object: Value) -> Value {
        set_resource_version(&mut object, self.revision);
        self.writes.insert(key.to_string(), Some(object.clone()));
        object
    }

    pub fn delete(&mut self, key: &str) {
        self.writes.insert(key.to_string(), None);
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: key.to_string(),
        source,
    })
}

fn set_resource_version(object: &mut Value, revision: u64) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = SledBackend::open(dir.path()).expect("sled");
        (dir, Store::new(Box::new(backend)).expect("store"))
    }

    fn obj(name: &str) -> Value {
        json!({"metadata": {"name": name}})
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_transaction_commits_all_its_writes_under_one_revision() {
        let (_dir, store) = store();
        let rev = store
            .write(|txn| {
                txn.put("/a/1", obj("1"));
                txn.put("/a/2", obj("2"));
                assert_eq!(
                    txn.list("/a/")?.len(),
                    2,
                    "a transaction reads its own writes"
                );
                Ok::<_, StoreError>(txn.revision())
            })
            .await
            .expect("commit");
        let (list_rev, items) = store.list("/a/").await.expect("list");
        assert_eq!((list_rev, items.len()), (rev, 2));
        assert!(items
            .iter()
            .all(|o| o["metadata"]["resourceVersion"] == json!(rev.to_string())));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_transaction_writes_nothing_and_keeps_the_revision() {
        let (_dir, store) = store();
        let before = store.revision().await;
        let result: Result<(), StoreError> = store
            .write(|txn| {
                txn.put("/a/1", obj("1"));
                Err(StoreError::Backend("refused".into()))
            })
            .await;
        assert!(result.is_err());
        assert_eq!(store.get("/a/1").await.expect("get"), None);
        assert_eq!(store.revision().await, before);
    }

    async fn put(store: &Store, key: &str, object: Value) -> u64 {
        store
            .write(|txn| {
                txn.put(key, object);
                Ok::<_, StoreError>(txn.revision())
            })
            .await
            .expect("put")
    }

    async fn delete(store: &Store, key: &str) -> u64 {
        store
            .write(|txn| {
                txn.delete(key);
                Ok::<_, StoreError>(txn.revision())
            })
            .await
            .expect("delete")
    }

    fn names(items: &BTreeMap<String, Value>) -> Vec<(&str, &str)> {
        items
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    v["data"]
                        .as_str()
                        .unwrap_or(v["metadata"]["name"].as_str().unwrap_or("")),
                )
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_past_revision_reads_as_it_was_committed() {
        let (_dir, store) = store();
        put(&store, "/a/1", obj("1")).await;
        let before = put(
            &store,
            "/a/2",
            json!({"metadata": {"name": "2"}, "data": "old"}),
        )
        .await;
        put(&store, "/a/3", obj("3")).await;
        put(
            &store,
            "/a/2",
            json!({"metadata": {"name": "2"}, "data": "new"}),
        )
        .await;
        delete(&store, "/a/1").await;
        put(&store, "/b/1", obj("other prefix")).await;

        let (rev, then) = store.list_at("/a/", Some(before)).await.expect("past");
        assert_eq!(rev, before);
        assert_eq!(names(&then), [("/a/1", "1"), ("/a/2", "old")]);
        assert_eq!(
            then["/a/2"]["metadata"]["resourceVersion"],
            json!(before.to_string()),
            "objects keep the resourceVersion they had"
        );
        let (now, current) = store.list_at("/a/", None).await.expect("current");
        assert_eq!(now, store.revision().await);
        assert_eq!(names(&current), [("/a/2", "new"), ("/a/3", "3")]);
        assert_eq!(
            store.list_at("/a/", Some(now)).await.expect("same").1,
            current
        );
        assert!(matches!(
            store.list_at("/a/", Some(now + 1)).await,
            Err(StoreError::FutureRevision { requested, current }) if requested == now + 1 && current == now
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_revision_older_than_the_history_is_compacted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = SledBackend::open(dir.path()).expect("sled");
        let store = Store::with_history(Box::new(backend), 2).expect("store");
        let first = put(&store, "/a/1", obj("1")).await;
        let second = put(&store, "/a/2", obj("2")).await;
        put(&store, "/a/3", obj("3")).await;
        put(&store, "/a/4", obj("4")).await;
        // The history holds the events of revisions 3 and 4: revision 2 is the oldest
        // state it can rebuild.
        let (_, at_second) = store.list_at("/a/", Some(second)).await.expect("kept");
        assert_eq!(names(&at_second), [("/a/1", "1"), ("/a/2", "2")]);
        assert!(matches!(
            store.list_at("/a/", Some(first)).await,
            Err(StoreError::Compacted { requested, oldest }) if requested == first && oldest == second
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn watches_resume_from_a_revision_and_refuse_one_too_old() {
        let (_dir, store) = store();
        for i in 0..3 {
            store
                .write(|txn| Ok::<_, StoreError>(txn.put(&format!("/a/{i}"), obj(&i.to_string()))))
                .await
                .expect("put");
        }
        store
            .write(|txn| {
                txn.delete("/a/0");
                Ok::<_, StoreError>(())
            })
            .await
            .expect("delete");
        let sub = store.subscribe(1).await.expect("in history");
        let kinds: Vec<(EventType, u64)> =
            sub.backlog.iter().map(|e| (e.kind, e.revision)).collect();
        assert_eq!(
            kinds,
            [
                (EventType::Added, 2),
                (EventType::Added, 3),
                (EventType::Deleted, 4)
            ]
        );
        assert_eq!(
            sub.backlog[2]
                .previous
                .as_deref()
                .map(|p| p["metadata"]["name"].clone()),
            Some(json!("0"))
        );

        // A store reopened on the same data starts a new history at its revision.
        drop(sub);
        let dir = _dir;
        drop(store);
        let reopened =
            Store::new(Box::new(SledBackend::open(dir.path()).expect("sled"))).expect("store");
        assert_eq!(
            reopened.revision().await,
            4,
            "the revision survives a restart"
        );
        assert!(matches!(
            reopened.subscribe(2).await,
            Err(TooOld {
                requested: 2,
                oldest: 5
            })
        ));
        assert!(reopened.subscribe(4).await.is_ok());
    }
}
