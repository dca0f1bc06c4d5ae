//! Watch bookmarks and the options of a watch that starts with the current state.

use http::StatusCode;
use serde_json::{json, Value};

use super::{configmap, create, get, send, state};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

/// The events of a watch that ends after its timeout.
async fn events(state: &crate::SharedState, query: &str) -> Vec<Value> {
    let (code, _, body) = send(
        state,
        "GET",
        &format!("{CMS}?watch=1&{query}"),
        Vec::new(),
        &[],
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    String::from_utf8_lossy(&body)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_that_allows_bookmarks_gets_one_before_it_times_out() {
    let (_dir, state) = state().await;
    let cm = create(&state, CMS, configmap("a", "1", json!({}))).await;
    let rv = cm["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let seen = events(
        &state,
        &format!("resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=3"),
    )
    .await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["type"], "BOOKMARK");
    assert_eq!(seen[0]["object"]["kind"], "ConfigMap");
    assert_eq!(
        seen[0]["object"]["metadata"]["resourceVersion"],
        rv.as_str()
    );
    assert!(seen[0]["object"]["metadata"].get("annotations").is_none());

    let without = events(&state, &format!("resourceVersion={rv}&timeoutSeconds=3")).await;
    assert!(
        without.is_empty(),
        "no bookmarks unless allowed: {without:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_events_end_with_an_annotated_bookmark() {
    let (_dir, state) = state().await;
    create(&state, CMS, configmap("a", "1", json!({}))).await;
    let b = create(&state, CMS, configmap("b", "1", json!({}))).await;
    let seen = events(
        &state,
        "sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
    )
    .await;
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default(),
                e["object"]["metadata"]["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("ADDED", "a"), ("ADDED", "b"), ("BOOKMARK", "")],
        "{seen:?}"
    );
    let bookmark = &seen[2]["object"]["metadata"];
    assert_eq!(
        bookmark["annotations"],
        json!({"k8s.io/initial-events-end": "true"})
    );
    assert_eq!(
        bookmark["resourceVersion"],
        b["metadata"]["resourceVersion"]
    );

    // Nothing first when the initial events are declined.
    let none = events(
        &state,
        "sendInitialEvents=false&resourceVersionMatch=NotOlderThan&timeoutSeconds=1",
    )
    .await;
    assert!(none.is_empty(), "{none:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_events_need_the_not_older_than_match() {
    let (_dir, state) = state().await;
    let (code, _, status) = get(&state, &format!("{CMS}?watch=1&sendInitialEvents=true")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        status["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
    );
    let (code, _, status) = get(
        &state,
        &format!("{CMS}?watch=1&resourceVersionMatch=NotOlderThan"),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        status["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
    );
}
