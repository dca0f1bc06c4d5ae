//! The endpoints, EndpointSlice and mirroring controllers against the apiserver. The test
//! plays the kubelet: it creates pods bound to a node and reports their IP, phase and
//! readiness through the status subresource; everything is observed through the API.

use std::time::Duration;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use crate::harness::{eventually, Cluster};

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid object")
}

/// Starts the endpoints and EndpointSlice controllers (slices of at most `per_slice`).
fn start_controllers(client: &Client, per_slice: usize) {
    tokio::spawn(controller::endpoints::run(client.clone()));
    let options = controller::endpointslice::Options {
        max_endpoints_per_slice: per_slice,
    };
    tokio::spawn(controller::endpointslice::run_with(client.clone(), options));
}

/// A Service `name` selecting `app=web`, port 8080 to container port 80 (seed 002's).
async fn create_service(client: &Client, name: &str) -> Service {
    let svc = json!({
        "metadata": {"name": name, "labels": {"team": "a"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"protocol": "TCP", "port": 8080, "targetPort": 80}]},
    });
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &from_json(svc))
        .await
        .expect("create service")
}

/// What a kubelet on `node-1` does to pods, done by hand.
struct Kubelet {
    pods: Api<Pod>,
}

impl Kubelet {
    fn new(client: &Client) -> Kubelet {
        Kubelet {
            pods: Api::namespaced(client.clone(), "default"),
        }
    }

    /// Creates a pod labelled `app=web` on node-1, without status yet.
    async fn create(&self, name: &str) {
        let pod = json!({
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": [
                {"name": "nginx", "image": "nginx", "ports": [{"name": "http", "containerPort": 80}]}]},
        });
        self.pods
            .create(&PostParams::default(), &from_json(pod))
            .await
            .expect("create pod");
    }

    /// Reports the pod running at `ip`, ready or not.
    async fn report(&self, name: &str, ip: &str, ready: bool) {
        let status = json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                            "lastTransitionTime": jiff_now()}],
        }});
        self.pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("patch pod status");
    }

    async fn start(&self, name: &str, ip: &str) {
        self.create(name).await;
        self.report(name, ip, true).await;
    }

    /// Confirms the pod stopped: it goes at once.
    async fn remove(&self, name: &str) {
        self.pods
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
            .expect("delete pod");
    }
}

fn jiff_now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn ips(list: &Option<Vec<EndpointAddress>>) -> Vec<String> {
    let mut ips: Vec<String> = list.iter().flatten().map(|a| a.ip.clone()).collect();
    ips.sort();
    ips
}

/// The (ready, not ready) IPs of the Endpoints `name`, if they exist.
async fn endpoint_ips(client: &Client, name: &str) -> Option<(Vec<String>, Vec<String>)> {
    let ep = Api::<Endpoints>::namespaced(client.clone(), "default")
        .get_opt(name)
        .await
        .expect("get endpoints")?;
    let subsets = ep.subsets.unwrap_or_default();
    let ready = subsets.iter().flat_map(|s| ips(&s.addresses)).collect();
    let not_ready = subsets
        .iter()
        .flat_map(|s| ips(&s.not_ready_addresses))
        .collect();
    Some((ready, not_ready))
}

async fn slices_of(client: &Client, service: &str) -> Vec<EndpointSlice> {
    let params = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .list(&params)
        .await
        .expect("list endpointslices")
        .items
}

/// Every endpoint of the Service's slices as `ip ready serving terminating`, sorted.
async fn slice_endpoints(client: &Client, service: &str) -> Vec<String> {
    let mut all: Vec<String> = slices_of(client, service)
        .await
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            let flag = |v: Option<bool>| v.unwrap_or_default();
            let (r, s, t) = (flag(c.ready), flag(c.serving), flag(c.terminating));
            format!(
                "{} ready={r} serving={s} terminating={t}",
                e.addresses.join(",")
            )
        })
        .collect();
    all.sort();
    all
}

/// Waits until `probe` returns `want`, failing with the last value seen otherwise.
async fn expect_eventually<T, F, Fut>(what: &str, want: T, mut probe: F)
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let last = std::sync::Mutex::new(None);
    let (want, last_seen) = (&want, &last);
    let found = eventually(15, || {
        let next = probe();
        async move {
            let got = next.await;
            let done = got == *want;
            *last_seen.lock().expect("lock") = Some(got);
            done.then_some(())
        }
    })
    .await;
    let last = last.into_inner().expect("lock");
    assert!(
        found.is_some(),
        "{what}: wanted {want:?}, last saw {last:?}"
    );
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The ENDPOINTS column `kubectl get endpoints` prints, from the apiserver's Table.
async fn endpoints_column(client: &Client, name: &str) -> Option<String> {
    let mut request = kube::core::Request::new("/api/v1/namespaces/default/endpoints")
        .get(name, &Default::default())
        .expect("request");
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
        .parse()
        .expect("header");
    request.headers_mut().insert("accept", accept);
    let table: Value = client.request(request).await.ok()?;
    table
        .pointer("/rows/0/cells/1")?
        .as_str()
        .map(str::to_string)
}

/// How many writes (creates, updates, patches, deletes) of `resource` the apiserver
/// served, from its `apiserver_request_total` counters.
async fn writes(client: &Client, resource: &str) -> u64 {
    let request = kube::core::Request::new("")
        .get("metrics", &Default::default())
        .expect("request");
    let text = client.request_text(request).await.expect("metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("apiserver_request_total{")
                && l.contains(&format!("resource=\"{resource}\""))
        })
        .filter(|l| {
            !["GET", "LIST", "WATCH"]
                .iter()
                .any(|v| l.contains(&format!("verb=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_and_slices_list_exactly_the_running_pods() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    start_controllers(&client, 100);
    let kubelet = Kubelet::new(&client);
    create_service(&client, "web").await;

    let none = (Vec::<String>::new(), Vec::<String>::new());
    expect_eventually("no pods yet", Some(none.clone()), || {
        endpoint_ips(&client, "web")
    })
    .await;
    expect_eventually("one placeholder slice", (1, 0), || async {
        let slices = slices_of(&client, "web").await;
        (
            slices.len(),
            slices.iter().map(|s| s.endpoints.len()).sum::<usize>(),
        )
    })
    .await;

    kubelet.start("a", "10.244.1.5").await;
    let one = Some((strings(&["10.244.1.5"]), vec![]));
    expect_eventually("pod a", one, || endpoint_ips(&client, "web")).await;
    expect_eventually(
        "the ENDPOINTS column shows the target port",
        Some("10.244.1.5:80".to_string()),
        || endpoints_column(&client, "web"),
    )
    .await;
    let a = "10.244.1.5 ready=true serving=true terminating=false";
    expect_eventually("slice with a", strings(&[a]), || {
        slice_endpoints(&client, "web")
    })
    .await;

    kubelet.start("b", "10.244.1.6").await;
    let two = Some((strings(&["10.244.1.5", "10.244.1.6"]), vec![]));
    expect_eventually("pods a and b", two, || endpoint_ips(&client, "web")).await;
    let b = "10.244.1.6 ready=true serving=true terminating=false";
    expect_eventually("slice with a and b", strings(&[a, b]), || {
        slice_endpoints(&client, "web")
    })
    .await;

    kubelet.remove("a").await;
    let only_b = Some((strings(&["10.244.1.6"]), vec![]));
    expect_eventually("pod b alone", only_b, || endpoint_ips(&client, "web")).await;
    expect_eventually("slice with b", strings(&[b]), || {
        slice_endpoints(&client, "web")
    })
    .await;

    kubelet.remove("b").await;
    expect_eventually("no pods left", Some(none), || endpoint_ips(&client, "web")).await;
    expect_eventually("back to the placeholder", (1, 0), || async {
        let slices = slices_of(&client, "web").await;
        (
            slices.len(),
            slices.iter().map(|s| s.endpoints.len()).sum::<usize>(),
        )
    })
    .await;

    let ep = Api::<Endpoints>::namespaced(client.clone(), "default")
        .get("web")
        .await
        .expect("endpoints");
    assert_eq!(
        ep.labels().get("team").map(String::as_str),
        Some("a"),
        "labels come from the Service"
    );
    let slice = &slices_of(&client, "web").await[0];
    assert!(slice.name_any().starts_with("web-"), "{}", slice.name_any());
    assert_eq!(
        slice
            .labels()
            .get("endpointslice.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    let owner = &slice.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Service", "web", Some(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_and_terminating_pods_leave_the_ready_addresses() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    start_controllers(&client, 100);
    let kubelet = Kubelet::new(&client);
    create_service(&client, "web").await;
    kubelet.start("a", "10.244.1.5").await;
    kubelet.start("b", "10.244.1.6").await;
    let both = Some((strings(&["10.244.1.5", "10.244.1.6"]), vec![]));
    expect_eventually("both ready", both, || endpoint_ips(&client, "web")).await;

    kubelet.report("a", "10.244.1.5", false).await;
    let split = Some((strings(&["10.244.1.6"]), strings(&["10.244.1.5"])));
    expect_eventually("a not ready", split, || endpoint_ips(&client, "web")).await;
    let b = "10.244.1.6 ready=true serving=true terminating=false";
    let a_unready = "10.244.1.5 ready=false serving=false terminating=false";
    expect_eventually("a unready in the slice", strings(&[a_unready, b]), || {
        slice_endpoints(&client, "web")
    })
    .await;

    // A graceful delete: the pod stays, terminating, until the kubelet confirms.
    Api::<Pod>::namespaced(client.clone(), "default")
        .delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    let gone = Some((vec![], strings(&["10.244.1.5"])));
    expect_eventually("terminating b leaves the endpoints", gone, || {
        endpoint_ips(&client, "web")
    })
    .await;
    let b_terminating = "10.244.1.6 ready=false serving=true terminating=true";
    expect_eventually(
        "terminating b stays in the slice",
        strings(&[a_unready, b_terminating]),
        || slice_endpoints(&client, "web"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_does_not_matter_writes_nothing() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    start_controllers(&client, 100);
    let kubelet = Kubelet::new(&client);
    create_service(&client, "web").await;
    kubelet.start("a", "10.244.1.5").await;
    let one = Some((strings(&["10.244.1.5"]), vec![]));
    expect_eventually("pod a", one, || endpoint_ips(&client, "web")).await;
    let a = "10.244.1.5 ready=true serving=true terminating=false";
    expect_eventually("slice with a", strings(&[a]), || {
        slice_endpoints(&client, "web")
    })
    .await;

    let endpoints = Api::<Endpoints>::namespaced(client.clone(), "default");
    let before = endpoints.get("web").await.expect("endpoints");
    let version = |slices: &[EndpointSlice]| -> Vec<Option<String>> {
        slices
            .iter()
            .map(|s| s.metadata.resource_version.clone())
            .collect()
    };
    let slices_before = version(&slices_of(&client, "web").await);
    let writes_before = (
        writes(&client, "endpoints").await,
        writes(&client, "endpointslices").await,
    );
    assert!(
        writes_before.0 > 0 && writes_before.1 > 0,
        "writes are counted: {writes_before:?}"
    );
    // A new matching pod without an IP yet, and new labels and annotations on pod a:
    // each makes the controllers look again, none changes what they publish.
    kubelet.create("pending").await;
    let relabel = json!({"metadata": {"labels": {"extra": "1"}, "annotations": {"note": "x"}}});
    Api::<Pod>::namespaced(client.clone(), "default")
        .patch("a", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .expect("relabel a");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = endpoints.get("web").await.expect("endpoints");
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "endpoints rewritten: {after:?}"
    );
    assert_eq!(
        version(&slices_of(&client, "web").await),
        slices_before,
        "slices rewritten"
    );
    let writes_after = (
        writes(&client, "endpoints").await,
        writes(&client, "endpointslices").await,
    );
    assert_eq!(
        writes_after, writes_before,
        "(endpoints, endpointslices) writes"
    );
    assert!(after
        .annotations()
        .contains_key("endpoints.kubernetes.io/last-change-trigger-time"));

    // The controllers are still at work: the pending pod does show up once running.
    kubelet.report("pending", "10.244.1.7", true).await;
    let two = Some((strings(&["10.244.1.5", "10.244.1.7"]), vec![]));
    expect_eventually("pending pod running", two, || endpoint_ips(&client, "web")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_go_when_their_service_or_selector_goes() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    start_controllers(&client, 100);
    let kubelet = Kubelet::new(&client);
    let services = Api::<Service>::namespaced(client.clone(), "default");
    create_service(&client, "web").await;
    kubelet.start("a", "10.244.1.5").await;
    let one = Some((strings(&["10.244.1.5"]), vec![]));
    expect_eventually("pod a", one.clone(), || endpoint_ips(&client, "web")).await;

    let drop_selector = json!({"spec": {"selector": null}});
    services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&drop_selector),
        )
        .await
        .expect("drop the selector");
    expect_eventually("endpoints deleted", None, || endpoint_ips(&client, "web")).await;
    expect_eventually("slices deleted", 0, || async {
        slices_of(&client, "web").await.len()
    })
    .await;

    let add_selector = json!({"spec": {"selector": {"app": "web"}}});
    services
        .patch("web", &PatchParams::default(), &Patch::Merge(&add_selector))
        .await
        .expect("restore the selector");
    expect_eventually("endpoints back", one, || endpoint_ips(&client, "web")).await;

    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    expect_eventually("endpoints gone with the service", None, || {
        endpoint_ips(&client, "web")
    })
    .await;

    // Hand-written Endpoints of a selector-less Service are not this controller's.
    let manual = json!({"metadata": {"name": "manual"}, "spec": {"ports": [{"port": 5432}]}});
    services
        .create(&PostParams::default(), &from_json(manual))
        .await
        .expect("create manual");
    let ep = json!({"metadata": {"name": "manual"},
                    "subsets": [{"addresses": [{"ip": "192.168.0.10"}], "ports": [{"port": 5432}]}]});
    Api::<Endpoints>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &from_json(ep))
        .await
        .expect("create manual endpoints");
    services
        .delete("manual", &DeleteParams::default())
        .await
        .expect("delete manual");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kept = Some((strings(&["192.168.0.10"]), vec![]));
    assert_eq!(endpoint_ips(&client, "manual").await, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_split_at_the_maximum_without_duplicates() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    start_controllers(&client, 2);
    let kubelet = Kubelet::new(&client);
    create_service(&client, "web").await;
    for (name, ip) in [
        ("a", "10.244.1.5"),
        ("b", "10.244.1.6"),
        ("c", "10.244.1.7"),
    ] {
        kubelet.start(name, ip).await;
    }
    let sizes = || async {
        let mut sizes: Vec<usize> = slices_of(&client, "web")
            .await
            .iter()
            .map(|s| s.endpoints.len())
            .collect();
        sizes.sort();
        sizes
    };
    expect_eventually("three endpoints in two slices", vec![1, 2], sizes).await;
    for name in ["a", "b", "c"] {
        kubelet.remove(name).await;
    }
    expect_eventually("one placeholder left", vec![0], sizes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_endpoints_are_mirrored_unless_they_opt_out() {
    let cluster = Cluster::start().await;
    let client = cluster.client.clone();
    start_controllers(&client, 100);
    tokio::spawn(controller::endpointslice::mirroring::run(client.clone()));
    let svc =
        json!({"metadata": {"name": "db"}, "spec": {"ports": [{"name": "sql", "port": 5432}]}});
    Api::<Service>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &from_json(svc))
        .await
        .expect("create db");
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), "default");
    let ep = json!({"metadata": {"name": "db", "labels": {"tier": "data"}}, "subsets": [{
        "addresses": [{"ip": "192.168.0.10"}],
        "notReadyAddresses": [{"ip": "192.168.0.11"}],
        "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]}]});
    endpoints
        .create(&PostParams::default(), &from_json(ep))
        .await
        .expect("create endpoints");

    let mirrored = [
        "192.168.0.10 ready=true serving=false terminating=false",
        "192.168.0.11 ready=false serving=false terminating=false",
    ];
    expect_eventually("mirrored", strings(&mirrored), || {
        slice_endpoints(&client, "db")
    })
    .await;
    let slices = slices_of(&client, "db").await;
    assert_eq!(slices.len(), 1);
    let slice = &slices[0];
    assert_eq!(
        slice
            .labels()
            .get("endpointslice.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("endpointslicemirroring-controller.k8s.io")
    );
    assert_eq!(slice.labels().get("tier").map(String::as_str), Some("data"));
    assert_eq!(slice.owner_references()[0].kind, "Endpoints");
    let name = slice.name_any();

    let more = json!({"subsets": [{
        "addresses": [{"ip": "192.168.0.10"}, {"ip": "192.168.0.12"}],
        "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]}]});
    endpoints
        .patch("db", &PatchParams::default(), &Patch::Merge(&more))
        .await
        .expect("update endpoints");
    let updated = [
        "192.168.0.10 ready=true serving=false terminating=false",
        "192.168.0.12 ready=true serving=false terminating=false",
    ];
    expect_eventually("mirror updated", strings(&updated), || {
        slice_endpoints(&client, "db")
    })
    .await;
    let names: Vec<String> = slices_of(&client, "db")
        .await
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(names, [name], "the mirrored slice is updated in place");
    // The endpoints controller leaves them alone: no selector, not its own.
    let ep = endpoints.get("db").await.expect("endpoints");
    assert_eq!(
        ips(&ep.subsets.unwrap_or_default()[0].addresses),
        strings(&["192.168.0.10", "192.168.0.12"])
    );

    let skip = json!({"metadata": {"labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}});
    endpoints
        .patch("db", &PatchParams::default(), &Patch::Merge(&skip))
        .await
        .expect("opt out");
    expect_eventually("mirror removed", 0, || async {
        slices_of(&client, "db").await.len()
    })
    .await;
}
