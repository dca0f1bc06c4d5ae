//! The kubelet's API on the node's address (port 10250), which the apiserver calls
//! for `kubectl logs` and `kubectl exec`: `/containerLogs/<namespace>/<pod>/<container>`
//! with the kubelet's query parameters (`follow`, `previous`, `timestamps`,
//! `tailLines`, `limitBytes`, `sinceSeconds`), read back from the CRI-format log
//! files, and `/exec/<namespace>/<pod>/<container>` (see [`super::exec`]).
//!
//! It speaks plain HTTP on the underlay, where a real kubelet speaks HTTPS, so a
//! capture on the underlay shows what crosses it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

/// The kubelet's port, as Nodes publish it in `status.daemonEndpoints`.
pub const KUBELET_PORT: u16 = 10250;

/// What the server knows of a running pod, by `<namespace>/<name>`: where its logs
/// are and how to enter its sandbox.
#[derive(Debug, Clone, Default)]
pub struct PodEntry {
    pub dir: PathBuf,
    /// The current restart count of each container.
    pub restarts: HashMap<String, i32>,
    /// Whether a container's current instance still runs (so `follow` waits).
    pub running: HashMap<String, bool>,
    /// The environment each container was started with.
    pub env: HashMap<String, Vec<(String, String)>>,
    /// The sandbox's pause process.
    pub pause_pid: i32,
    /// The `kubesim` executable, whose `nsenter` enters the sandbox.
    pub binary: PathBuf,
}

/// How to run a command in a container's sandbox.
#[derive(Debug, Clone)]
pub struct Sandboxed {
    pub binary: PathBuf,
    pub pause_pid: i32,
    pub env: Vec<(String, String)>,
}

/// The pods the server can show logs of and exec into.
#[derive(Debug, Default)]
pub struct Registry {
    pods: Mutex<HashMap<String, PodEntry>>,
}

impl Registry {
    /// The sandbox of a running container.
    pub fn sandboxed(&self, namespace: &str, pod: &str, container: &str) -> Option<Sandboxed> {
        let entry = self.get(&format!("{namespace}/{pod}"))?;
        if !entry.running.get(container).copied().unwrap_or(false) {
            return None;
        }
        Some(Sandboxed {
            binary: entry.binary.clone(),
            pause_pid: entry.pause_pid,
            env: entry.env.get(container).cloned().unwrap_or_default(),
        })
    }

    pub fn set(&self, key: String, logs: PodEntry) {
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, logs);
    }

    pub fn remove(&self, key: &str) {
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }

    fn get(&self, key: &str) -> Option<PodEntry> {
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    #[serde(default)]
    pub follow: bool,
    #[serde(default)]
    pub previous: bool,
    #[serde(default)]
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<String>,
}

/// One line of a CRI log file: its time, and its text with the newline when the
/// runtime ended it (`F`) or without (`P`, a partial line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub time: &'a str,
    pub text: String,
}

pub fn parse_line(line: &str) -> Option<LogLine<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let body = parts.next().unwrap_or_default();
    let text = if tag == "P" {
        body.to_owned()
    } else {
        format!("{body}\n")
    };
    Some(LogLine { time, text })
}

/// What `kubectl logs` prints of a log file's content, by the options (without
/// `follow`, which the server handles by reading on).
pub fn render(content: &str, opts: &LogOptions, now: Timestamp) -> String {
    let since = opts
        .since_seconds
        .and_then(|s| {
            now.checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(s))
                .ok()
        })
        .or_else(|| opts.since_time.as_deref().and_then(|t| t.parse().ok()));
    let mut lines: Vec<LogLine> = content
        .lines()
        .filter_map(parse_line)
        .filter(|l| match (since, l.time.parse::<Timestamp>()) {
            (Some(since), Ok(t)) => t >= since,
            _ => true,
        })
        .collect();
    if let Some(tail) = opts.tail_lines.and_then(|t| usize::try_from(t).ok()) {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    let mut out = String::new();
    for line in lines {
        if opts.timestamps {
            out.push_str(line.time);
            out.push(' ');
        }
        out.push_str(&line.text);
    }
    if let Some(limit) = opts.limit_bytes.and_then(|l| usize::try_from(l).ok()) {
        if out.len() > limit {
            let mut cut = limit;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
        }
    }
    out
}

/// Serves the kubelet API on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, registry: Arc<Registry>) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(super::exec::handle).post(super::exec::handle),
        )
        .with_state(registry);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

async fn container_logs(
    State(registry): State<Arc<Registry>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(opts): Query<LogOptions>,
) -> Response {
    let Some(logs) = registry.get(&format!("{namespace}/{pod}")) else {
        return (
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod} is not running on this node"),
        )
            .into_response();
    };
    let Some(&restarts) = logs.restarts.get(&container) else {
        return (
            StatusCode::NOT_FOUND,
            format!("container {container} is not valid for pod {pod}"),
        )
            .into_response();
    };
    let instance = if opts.previous {
        if restarts == 0 {
            return (
                StatusCode::BAD_REQUEST,
                format!("previous terminated container \"{container}\" in pod \"{pod}\" not found"),
            )
                .into_response();
        }
        restarts - 1
    } else {
        restarts
    };
    let path = logs.dir.join(&container).join(format!("{instance}.log"));
    let content = tokio::fs::read_to_string(&path).await.unwrap_or_default();
    let first = render(&content, &opts, Timestamp::now());
    if !opts.follow || opts.previous {
        return first.into_response();
    }
    let key = format!("{namespace}/{pod}");
    let state = (
        content.len(),
        registry,
        key,
        container,
        path,
        opts.timestamps,
    );
    let rest = futures::stream::unfold(
        state,
        |(offset, registry, key, container, path, ts)| async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let current = registry.get(&key)?;
                let content = tokio::fs::read_to_string(&path).await.ok()?;
                if content.len() > offset {
                    // Only whole lines: a line still being written waits for the next poll.
                    let end = content[offset..].rfind('\n').map(|i| offset + i + 1)?;
                    let opts = LogOptions {
                        timestamps: ts,
                        ..LogOptions::default()
                    };
                    let chunk = render(&content[offset..end], &opts, Timestamp::now());
                    return Some((
                        Ok::<_, std::io::Error>(chunk),
                        (end, registry, key, container, path, ts),
                    ));
                }
                if !current.running.get(&container).copied().unwrap_or(false) {
                    return None;
                }
            }
        },
    );
    let body = futures::stream::once(async move { Ok(first) }).chain(rest);
    Body::from_stream(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-11-25T10:00:00.000000001Z stdout F first\n\
                       2026-11-25T10:00:05Z stderr F second\n\
                       2026-11-25T10:00:09Z stdout P par\n\
                       2026-11-25T10:00:09.5Z stdout F tial\n";

    fn now() -> Timestamp {
        "2026-11-25T10:00:10Z".parse().expect("time")
    }

    #[test]
    fn plain_logs_join_partial_lines() {
        assert_eq!(
            render(LOG, &LogOptions::default(), now()),
            "first\nsecond\npartial\n"
        );
    }

    #[test]
    fn timestamps_tail_since_and_limit() {
        let opts = LogOptions {
            timestamps: true,
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(render(LOG, &opts, now()), "2026-11-25T10:00:09.5Z tial\n");
        let since = LogOptions {
            since_seconds: Some(6),
            ..Default::default()
        };
        assert_eq!(render(LOG, &since, now()), "second\npartial\n");
        let limit = LogOptions {
            limit_bytes: Some(3),
            ..Default::default()
        };
        assert_eq!(render(LOG, &limit, now()), "fir");
    }
}
