//! `limit`/`continue`: later pages read the first page's revision; a token whose
//! revision the history no longer holds is told 410 with a token to go on; the list
//! options are checked as the apiserver checks them.

use base64::Engine;
use http::StatusCode;
use serde_json::{json, Value};

use super::{call, configmap, create, get, names, state};
use crate::{AppState, Config};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn token_json(token: &Value) -> Value {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.as_str().expect("token"))
        .expect("base64url token");
    serde_json::from_slice(&raw).expect("json token")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_continued_list_reads_the_revision_of_its_first_page() {
    let (_dir, state) = state().await;
    for i in 0..5 {
        create(&state, CMS, configmap(&format!("cm-{i}"), "old", json!({}))).await;
    }
    let (code, _, first) = get(&state, &format!("{CMS}?limit=2")).await;
    assert_eq!(code, StatusCode::OK, "{first}");
    assert_eq!(names(&first), ["cm-0", "cm-1"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let rv = first["metadata"]["resourceVersion"].clone();
    let token = first["metadata"]["continue"].clone();
    assert_eq!(
        token_json(&token),
        json!({"v": "meta.k8s.io/v1", "rv": rv.as_str().and_then(|r| r.parse::<i64>().ok()), "start": "cm-1\u{0}"})
    );

    // Between the pages: one deleted, one created inside the rest, one created after
    // it, one changed.
    let (code, _, _) = call(&state, "DELETE", &format!("{CMS}/cm-2"), None, &[]).await;
    assert_eq!(code, StatusCode::OK);
    create(&state, CMS, configmap("cm-1a", "new", json!({}))).await;
    create(&state, CMS, configmap("cm-9", "new", json!({}))).await;
    let merge = [("content-type", "application/merge-patch+json")];
    let patch = json!({"data": {"v": "new"}});
    let (code, _, _) = call(&state, "PATCH", &format!("{CMS}/cm-3"), Some(patch), &merge).await;
    assert_eq!(code, StatusCode::OK);

    let uri = |token: &Value| {
        format!(
            "{CMS}?limit=2&continue={}",
            token.as_str().expect("continue token")
        )
    };
    let (code, _, second) = get(&state, &uri(&token)).await;
    assert_eq!(code, StatusCode::OK, "{second}");
    assert_eq!(names(&second), ["cm-2", "cm-3"], "{second}");
    assert_eq!(second["items"][1]["data"]["v"], "old");
    assert_eq!(second["metadata"]["resourceVersion"], rv);
    assert_eq!(second["metadata"]["remainingItemCount"], 1);
    let (_, _, third) = get(&state, &uri(&second["metadata"]["continue"])).await;
    assert_eq!(names(&third), ["cm-4"]);
    assert_eq!(third["metadata"]["resourceVersion"], rv);
    assert!(third["metadata"].get("continue").is_none(), "{third}");

    // A new list sees the changes.
    let (_, _, now) = get(&state, CMS).await;
    assert_eq!(
        names(&now),
        ["cm-0", "cm-1", "cm-1a", "cm-3", "cm-4", "cm-9"]
    );
    assert_ne!(now["metadata"]["resourceVersion"], rv);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_continue_token_older_than_the_history_is_expired_with_one_to_go_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let state = AppState::open(&config, "secret".into(), 6443)
        .await
        .expect("open");
    for name in ["a", "b", "c"] {
        create(&state, CMS, configmap(name, "x", json!({}))).await;
    }
    let (_, _, first) = get(&state, &format!("{CMS}?limit=1")).await;
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("token")
        .to_string();
    create(&state, CMS, configmap("d", "x", json!({}))).await;
    // A restarted server keeps no history from before it started, as etcd keeps none
    // before its compaction.
    drop(state);
    let state = AppState::open(&config, "secret".into(), 6443)
        .await
        .expect("reopen");
    let (code, _, status) = get(&state, &format!("{CMS}?limit=1&continue={token}")).await;
    assert_eq!(code, StatusCode::GONE, "{status}");
    assert_eq!(status["reason"], "Expired");
    assert_eq!(
        status["message"],
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."
    );
    let inconsistent = status["metadata"]["continue"].clone();
    assert_eq!(
        token_json(&inconsistent),
        json!({"v": "meta.k8s.io/v1", "rv": -1, "start": "a\u{0}"})
    );
    // That token lists the rest as it is now.
    let (code, _, rest) = get(
        &state,
        &format!("{CMS}?continue={}", inconsistent.as_str().expect("token")),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{rest}");
    assert_eq!(names(&rest), ["b", "c", "d"]);
    let (_, _, now) = get(&state, CMS).await;
    assert_eq!(
        rest["metadata"]["resourceVersion"],
        now["metadata"]["resourceVersion"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_filtered_page_goes_on_without_counting_what_remains() {
    let (_dir, state) = state().await;
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "web"), ("d", "web")] {
        create(&state, CMS, configmap(name, "x", json!({"tier": tier}))).await;
    }
    let (_, _, first) = get(&state, &format!("{CMS}?labelSelector=tier%3Dweb&limit=2")).await;
    assert_eq!(names(&first), ["a", "c"]);
    assert!(
        first["metadata"].get("remainingItemCount").is_none(),
        "{first}"
    );
    let token = first["metadata"]["continue"].as_str().expect("token");
    let (_, _, second) = get(
        &state,
        &format!("{CMS}?labelSelector=tier%3Dweb&limit=2&continue={token}"),
    )
    .await;
    assert_eq!(names(&second), ["d"]);
    assert!(second["metadata"].get("continue").is_none(), "{second}");
    // As a table, for kubectl's chunked get.
    let table = [("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")];
    let (_, _, rows) = call(&state, "GET", &format!("{CMS}?limit=1"), None, &table).await;
    assert_eq!(rows["kind"], "Table");
    assert!(rows["metadata"]["continue"].is_string(), "{rows}");
    assert_eq!(rows["metadata"]["remainingItemCount"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_options_are_checked_as_the_apiserver_checks_them() {
    let (_dir, state) = state().await;
    let before = create(&state, CMS, configmap("a", "1", json!({}))).await;
    let past = before["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    create(&state, CMS, configmap("b", "1", json!({}))).await;

    // An exact past revision is read as it was.
    let (code, _, exact) = get(
        &state,
        &format!("{CMS}?resourceVersion={past}&resourceVersionMatch=Exact"),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{exact}");
    assert_eq!(names(&exact), ["a"]);
    assert_eq!(exact["metadata"]["resourceVersion"], past.as_str());
    // So is a limited one, as before resourceVersionMatch existed.
    let (_, _, legacy) = get(&state, &format!("{CMS}?resourceVersion={past}&limit=5")).await;
    assert_eq!(names(&legacy), ["a"]);
    // Without a limit, the current state, which is not older.
    let (_, _, current) = get(&state, &format!("{CMS}?resourceVersion={past}")).await;
    assert_eq!(names(&current), ["a", "b"]);

    let (code, _, status) = get(
        &state,
        &format!("{CMS}?resourceVersion=999999&resourceVersionMatch=NotOlderThan"),
    )
    .await;
    assert_eq!(code, StatusCode::GATEWAY_TIMEOUT, "{status}");
    assert_eq!(status["reason"], "Timeout");
    assert!(
        status["message"].as_str().is_some_and(
            |m| m.starts_with("Timeout: Too large resource version: 999999, current: ")
        ),
        "{status}"
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "ResourceVersionTooLarge"
    );

    let (code, _, status) = get(&state, &format!("{CMS}?resourceVersionMatch=Exact")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        status["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
    );
    assert_eq!(status["details"]["kind"], "ListOptions");
    assert_eq!(status["details"]["group"], "meta.k8s.io");

    let (_, _, page) = get(&state, &format!("{CMS}?limit=1")).await;
    let token = page["metadata"]["continue"].as_str().expect("token");
    let (code, _, status) = get(
        &state,
        &format!("{CMS}?limit=1&continue={token}&resourceVersion={past}"),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        status["message"],
        "specifying resource version is not allowed when using continue"
    );
    let (code, _, status) = get(&state, &format!("{CMS}?limit=1&continue=bm90LWpzb24")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(
        status["message"],
        "invalid continue token: continue key is not valid: invalid character 'o' in literal null (expecting 'u')"
    );
}
