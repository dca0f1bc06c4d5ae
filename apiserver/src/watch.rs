//! Watches: a chunked stream of `{"type": …, "object": …}` lines, started from a
//! resourceVersion (410 Expired when the history no longer reaches it), from the
//! current state (synthetic ADDED events), with bookmarks and a timeout. Bookmarks,
//! when allowed, come periodically and, as the apiserver sends them, 2 seconds before
//! the watch times out. Filtered watches see an object leave their selection as DELETED
//! and enter it as ADDED.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{ApiError, Result};
use crate::handlers::{read::Filter, table, Call};
use crate::objects;
use crate::store::{Event, EventType, Subscription};

const BOOKMARK_EVERY: Duration = Duration::from_secs(10);
/// How long before its timeout a watch gets its last bookmark.
const BOOKMARK_BEFORE_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

struct Watcher {
    call: Call,
    filter: Filter,
    prefix: String,
    name: Option<String>,
    table: Option<&'static str>,
    tx: mpsc::Sender<std::result::Result<Bytes, std::io::Error>>,
}

impl Watcher {
    fn selects(&self, obj: &Value) -> bool {
        self.name.as_deref().is_none_or(|n| objects::name(obj) == n) && self.filter.matches(obj)
    }

    /// The event type this watcher sees for `event`, if any.
    fn view(&self, event: &Event) -> Option<EventType> {
        if !event.key.starts_with(&self.prefix) {
            return None;
        }
        let now = self.selects(&event.object);
        let before = event.previous.as_deref().is_some_and(|p| self.selects(p));
        match event.kind {
            EventType::Deleted => before.then_some(EventType::Deleted),
            EventType::Added => now.then_some(EventType::Added),
            EventType::Modified => match (before, now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            },
        }
    }

    fn render(&self, object: &Value) -> Value {
        match self.table {
            Some(api_version) => {
                let rv = object
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                table(
                    &self.call,
                    api_version,
                    std::slice::from_ref(object),
                    json!({"resourceVersion": rv}),
                )
            }
            None => object.clone(),
        }
    }

    async fn send(&self, kind: &str, object: Value) -> bool {
        let mut line = json!({"type": kind, "object": object}).to_string();
        line.push('\n');
        self.tx.send(Ok(Bytes::from(line))).await.is_ok()
    }

    async fn send_event(&self, kind: EventType, object: &Value) -> bool {
        self.send(kind.as_str(), self.render(object)).await
    }

    async fn bookmark(&self, rv: u64, initial_end: bool) -> bool {
        let res = self.call.res();
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object =
            json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": metadata});
        self.send("BOOKMARK", object).await
    }

    async fn expired(&self, message: String) {
        self.send("ERROR", ApiError::gone(message).status()).await;
    }
}

pub async fn watch(call: Call) -> Result<Response> {
    let filter = Filter::from_call(&call)?;
    let res = call.res();
    let prefix = res.key_prefix(call.target.namespace.as_deref());
    let name = call.target.name.clone();
    let rv = call.params.get("resourceVersion").map(str::to_string);
    let send_initial = watch_options(&call)?;
    let bookmarks = call.params.flag("allowWatchBookmarks");
    let timeout = call
        .params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let from = match rv.as_deref() {
        None | Some("0") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion: Invalid value: \"{v}\": must be a valid resource version"
            ))
        })?),
    };
    let store = &call.state.store;
    let start = match (send_initial, from) {
        // The current state first, which must not be older than the one asked for.
        (Some(true), _) | (None, None) => {
            let (items, sub) = store.list_and_subscribe(&prefix).await?;
            if let Some(wanted) = from.filter(|w| *w > sub.revision) {
                return Err(ApiError::too_large_resource_version(wanted, sub.revision));
            }
            Start::Initial(items, sub)
        }
        (Some(false), None) => Start::From(store.subscribe(store.revision().await).await),
        (_, Some(from)) => Start::From(store.subscribe(from).await),
    };
    let send_initial = send_initial == Some(true);
    let (tx, rx) = mpsc::channel(256);
    let table = call.wants_table();
    let watcher = Watcher {
        call,
        filter,
        prefix,
        name,
        table,
        tx,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    tokio::spawn(async move {
        let _ = tokio::time::timeout_at(
            deadline,
            run(watcher, start, send_initial, bookmarks, deadline),
        )
        .await;
    });
    let body = Body::from_stream(ReceiverStream::new(rx));
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `sendInitialEvents` (`None` when not given), checked with `resourceVersionMatch`
/// as the apiserver checks a watch's `ListOptions`.
fn watch_options(call: &Call) -> Result<Option<bool>> {
    use api::field::FieldError;
    let send_initial = call
        .params
        .get("sendInitialEvents")
        .map(|v| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"));
    let matching = call.params.get("resourceVersionMatch");
    let mut errors = Vec::new();
    if send_initial.is_some() && matching != Some("NotOlderThan") {
        errors.push(FieldError::forbidden(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if let Some(m) = matching {
        if send_initial.is_none() {
            errors.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if m != "NotOlderThan" {
            errors.push(FieldError::not_supported(
                "resourceVersionMatch",
                m,
                &["NotOlderThan"],
            ));
        }
        if call.params.get("continue").is_some() {
            errors.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden when continue is provided",
            ));
        }
    }
    if errors.is_empty() {
        Ok(send_initial)
    } else {
        Err(ApiError::invalid_options("ListOptions", &errors))
    }
}

enum Start {
    From(std::result::Result<Subscription, crate::store::TooOld>),
    Initial(Vec<Value>, Subscription),
}

async fn run(
    w: Watcher,
    start: Start,
    send_initial: bool,
    bookmarks: bool,
    deadline: tokio::time::Instant,
) {
    let mut sub = match start {
        Start::From(Ok(sub)) => sub,
        Start::From(Err(too_old)) => {
            w.expired(format!(
                "too old resource version: {} ({})",
                too_old.requested, too_old.oldest
            ))
            .await;
            return;
        }
        Start::Initial(items, sub) => {
            for item in items.iter().filter(|o| w.selects(o)) {
                if !w.send_event(EventType::Added, item).await {
                    return;
                }
            }
            if send_initial && bookmarks && !w.bookmark(sub.revision, true).await {
                return;
            }
            sub
        }
    };
    let mut last = sub.revision;
    for event in std::mem::take(&mut sub.backlog) {
        if !deliver(&w, &event).await {
            return;
        }
        last = event.revision;
    }
    let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
    ticker.tick().await;
    // No last bookmark for a watch too short to have one before its end.
    let last_bookmark = deadline
        .checked_sub(BOOKMARK_BEFORE_TIMEOUT)
        .filter(|at| *at > tokio::time::Instant::now());
    let before_timeout = async move {
        match last_bookmark {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(before_timeout);
    let mut before_timeout_sent = false;
    loop {
        tokio::select! {
            received = sub.live.recv() => match received {
                Ok(event) => {
                    if event.revision <= last {
                        continue;
                    }
                    last = event.revision;
                    if !deliver(&w, &event).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    w.expired(format!("the watch fell behind at resource version {last}")).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            _ = ticker.tick(), if bookmarks => {
                if !w.bookmark(last, false).await {
                    return;
                }
            }
            _ = &mut before_timeout, if bookmarks && !before_timeout_sent => {
                before_timeout_sent = true;
                if !w.bookmark(last, false).await {
                    return;
                }
            }
            _ = w.tx.closed() => return,
        }
    }
}

async fn deliver(w: &Watcher, event: &Arc<Event>) -> bool {
    match w.view(event) {
        Some(kind) => w.send_event(kind, &event.object).await,
        None => true,
    }
}
