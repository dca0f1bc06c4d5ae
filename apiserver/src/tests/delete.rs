//! delete and deletecollection: DeleteOptions from the body or the query, the
//! garbage collector's finalizers, preconditions, and collections by selector.

use http::StatusCode;
use serde_json::{json, Value};

use super::{call, configmap, create, get, names, state};

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    })
}

async fn delete_with(state: &crate::SharedState, uri: &str, options: Value) -> (StatusCode, Value) {
    let json = [("content-type", "application/json")];
    let (code, _, body) = call(state, "DELETE", uri, Some(options), &json).await;
    (code, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collection_is_deleted_by_its_selector() {
    let (_dir, state) = state().await;
    for (name, tier) in [("a", "web"), ("b", "db"), ("c", "web")] {
        create(&state, CMS, configmap(name, "x", json!({"tier": tier}))).await;
    }
    let (_, _, before) = get(&state, CMS).await;
    let (code, _, deleted) = call(
        &state,
        "DELETE",
        &format!("{CMS}?labelSelector=tier%3Dweb"),
        None,
        &[],
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["kind"], "ConfigMapList");
    assert_eq!(names(&deleted), ["a", "c"]);
    // The objects as they were listed, at the revision they were listed at.
    assert_eq!(
        deleted["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"]
    );
    assert!(deleted["items"][0]["metadata"]
        .get("deletionTimestamp")
        .is_none());
    let (_, _, left) = get(&state, CMS).await;
    assert_eq!(names(&left), ["b"]);

    // A dry run deletes nothing.
    let (code, _, listed) = call(&state, "DELETE", &format!("{CMS}?dryRun=All"), None, &[]).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(names(&listed), ["b"]);
    assert_eq!(names(&get(&state, CMS).await.2), ["b"]);
    let (code, _, _) = call(&state, "DELETE", CMS, None, &[]).await;
    assert_eq!(code, StatusCode::OK);
    assert!(names(&get(&state, CMS).await.2).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn orphan_and_foreground_deletion_leave_the_object_to_the_garbage_collector() {
    let (_dir, state) = state().await;
    create(&state, DEPLOYS, deployment("orphans")).await;
    let (code, marked) = delete_with(
        &state,
        &format!("{DEPLOYS}/orphans"),
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan"}),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{marked}");
    assert_eq!(
        marked["kind"], "Deployment",
        "the object, not a Status: {marked}"
    );
    let meta = &marked["metadata"];
    assert_eq!(meta["finalizers"], json!(["orphan"]));
    assert!(meta["deletionTimestamp"].is_string(), "{marked}");
    assert_eq!(meta["deletionGracePeriodSeconds"], 0);
    assert_eq!(meta["generation"], 2, "marking the deletion is a change");
    let (_, _, stored) = get(&state, &format!("{DEPLOYS}/orphans")).await;
    assert_eq!(stored["metadata"]["finalizers"], json!(["orphan"]));

    // Asking again for another policy swaps the finalizer; the deletion stays as it was.
    let (_, swapped) = delete_with(
        &state,
        &format!("{DEPLOYS}/orphans"),
        json!({"propagationPolicy": "Foreground"}),
    )
    .await;
    assert_eq!(
        swapped["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    assert_eq!(
        swapped["metadata"]["deletionTimestamp"],
        meta["deletionTimestamp"]
    );
    assert_eq!(swapped["metadata"]["generation"], 2);
    // Asking the same again changes nothing.
    let (_, again) = delete_with(
        &state,
        &format!("{DEPLOYS}/orphans"),
        json!({"propagationPolicy": "Foreground"}),
    )
    .await;
    assert_eq!(
        again["metadata"]["resourceVersion"],
        swapped["metadata"]["resourceVersion"]
    );
    // Background needs no finalizer: with none left the object goes.
    let (code, gone) = delete_with(
        &state,
        &format!("{DEPLOYS}/orphans"),
        json!({"propagationPolicy": "Background"}),
    )
    .await;
    assert_eq!(
        (code, &gone["kind"]),
        (StatusCode::OK, &json!("Status")),
        "{gone}"
    );
    let (code, _, _) = get(&state, &format!("{DEPLOYS}/orphans")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    // The policy may come in the query; other finalizers are kept before it.
    let mut held = configmap("held", "x", json!({}));
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    create(&state, CMS, held).await;
    let (code, _, marked) = call(
        &state,
        "DELETE",
        &format!("{CMS}/held?propagationPolicy=Foreground"),
        None,
        &[],
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        marked["metadata"]["finalizers"],
        json!(["example.com/hold", "foregroundDeletion"])
    );
    // The deprecated orphanDependents still orphans; false asks for the dependents to
    // go, answered as accepted while the object waits.
    let (code, marked) = delete_with(
        &state,
        &format!("{CMS}/held"),
        json!({"orphanDependents": false}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(
        marked["metadata"]["finalizers"],
        json!(["example.com/hold"])
    );
    let (_, marked) = delete_with(
        &state,
        &format!("{CMS}/held"),
        json!({"orphanDependents": true}),
    )
    .await;
    assert_eq!(
        marked["metadata"]["finalizers"],
        json!(["example.com/hold", "orphan"])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn preconditions_that_do_not_hold_are_a_conflict() {
    let (_dir, state) = state().await;
    let cm = create(&state, CMS, configmap("pre", "x", json!({}))).await;
    let uid = cm["metadata"]["uid"].as_str().expect("uid").to_string();
    let rv = cm["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    let uri = format!("{CMS}/pre");

    let (code, status) = delete_with(
        &state,
        &uri,
        json!({"preconditions": {"uid": "not-the-uid"}}),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["message"],
        format!("Operation cannot be fulfilled on ConfigMap \"pre\": the UID in the precondition (not-the-uid) does not match the UID in record ({uid}). The object might have been deleted and then recreated")
    );
    assert_eq!(
        status["details"],
        json!({"name": "pre", "group": "", "kind": "ConfigMap"})
    );

    let (code, status) = delete_with(
        &state,
        &uri,
        json!({"preconditions": {"resourceVersion": "1"}}),
    )
    .await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(
        status["message"],
        format!("Operation cannot be fulfilled on ConfigMap \"pre\": the ResourceVersion in the precondition (1) does not match the ResourceVersion in record ({rv}). The object might have been modified")
    );
    let (_, _, still) = get(&state, &uri).await;
    assert_eq!(still["metadata"]["uid"], uid.as_str());

    let (code, done) = delete_with(
        &state,
        &uri,
        json!({"preconditions": {"uid": uid, "resourceVersion": rv}}),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "Success");

    // Deployments are named with their group.
    create(&state, DEPLOYS, deployment("web")).await;
    let (_, status) = delete_with(
        &state,
        &format!("{DEPLOYS}/web"),
        json!({"preconditions": {"resourceVersion": "1"}}),
    )
    .await;
    assert!(
        status["message"].as_str().is_some_and(
            |m| m.starts_with("Operation cannot be fulfilled on Deployment.apps \"web\": ")
        ),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_options_are_validated_and_a_dry_run_keeps_the_object() {
    let (_dir, state) = state().await;
    create(&state, CMS, configmap("kept", "x", json!({}))).await;
    let uri = format!("{CMS}/kept");
    let (code, status) = delete_with(
        &state,
        &uri,
        json!({"orphanDependents": false, "propagationPolicy": "Orphan"}),
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        status["message"],
        "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Invalid value: \"Orphan\": orphanDependents and deletionPropagation cannot be both set"
    );
    let (code, status) = delete_with(&state, &uri, json!({"propagationPolicy": "Later"})).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        status["message"],
        "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"Later\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
    );
    let (code, _) = delete_with(&state, &uri, json!({"dryRun": ["All"]})).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _, _) = get(&state, &uri).await;
    assert_eq!(code, StatusCode::OK, "a dry run deletes nothing");
}
