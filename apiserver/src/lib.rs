//! The kubesim apiserver: the Kubernetes REST API over HTTPS for the resources a
//! Service-and-networking lab needs, stored in sled, spoken to by real `kubectl` and
//! kube-rs. It is not an aggregator, has no admission plugins and one admin identity.
//!
//! `app(state)` is the whole HTTP surface, testable in-process; `serve` adds TLS.

mod discovery;
mod error;
pub mod handlers;
mod kinds;
mod metrics;
mod objects;
mod openapi;
pub mod resources;
pub mod store;
pub mod tls;
mod watch;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub use error::ApiError;
use store::{SledBackend, Store};

/// How the apiserver is set up; the CLI flags mirror k3s server's.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    pub service_cidr: String,
    pub node_port_range: String,
    pub write_kubeconfig: Option<PathBuf>,
    /// Extra names and addresses for the serving certificate.
    pub tls_san: Vec<String>,
    /// The address published in the `kubernetes` Endpoints; defaults to the bind
    /// address, or 127.0.0.1 when binding to all addresses.
    pub advertise_address: Option<IpAddr>,
    /// A named network namespace (the cluster's underlay) in which the apiserver also
    /// listens, on the advertise address and the same port, so nodes and pods reach it
    /// the way they reach a real cluster's apiserver.
    pub underlay_netns: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/kubesim/server"),
            bind_address: IpAddr::from([127, 0, 0, 1]),
            port: 6443,
            service_cidr: "10.96.0.0/12".into(),
            node_port_range: "30000-32767".into(),
            write_kubeconfig: None,
            tls_san: Vec::new(),
            advertise_address: None,
            underlay_netns: None,
        }
    }
}

/// Shared by every request.
pub struct AppState {
    pub store: Store,
    pub token: String,
    pub service_cidr: String,
    pub node_port_range: String,
    pub metrics: metrics::Metrics,
    /// The underlay namespace, from which the apiserver dials kubelets.
    pub underlay_netns: Option<String>,
    /// The stored Services' specs as of a committed revision, so a Service create
    /// does not decode every stored Service again (see `kinds::allocate`).
    pub service_specs: std::sync::Mutex<Option<kinds::ServiceSpecs>>,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// Opens the store under `config.data_dir` and makes sure the default namespaces
    /// and the `kubernetes` Service exist, pointing at `port`.
    pub async fn open(config: &Config, token: String, port: u16) -> anyhow::Result<SharedState> {
        // Validate the ranges up front: a bad flag is a start-up error, not a 500 later.
        api::alloc::IpAllocator::new(&config.service_cidr)
            .map_err(|e| anyhow::anyhow!("--service-cidr {}: {e}", config.service_cidr))?;
        api::alloc::PortAllocator::new(&config.node_port_range).map_err(|e| {
            anyhow::anyhow!("--service-node-port-range {}: {e}", config.node_port_range)
        })?;
        let backend = SledBackend::open(&config.data_dir.join("db"))?;
        let state = Arc::new(AppState {
            store: Store::new(Box::new(backend))?,
            token,
            service_cidr: config.service_cidr.clone(),
            node_port_range: config.node_port_range.clone(),
            metrics: metrics::Metrics::default(),
            underlay_netns: config.underlay_netns.clone(),
            service_specs: std::sync::Mutex::new(None),
        });
        let advertise =
            config
                .advertise_address
                .unwrap_or(if config.bind_address.is_unspecified() {
                    IpAddr::from([127, 0, 0, 1])
                } else {
                    config.bind_address
                });
        kinds::bootstrap(&state, advertise, port).await?;
        Ok(state)
    }
}

/// The whole HTTP API.
pub fn app(state: SharedState) -> Router {
    let public = Router::new()
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(health))
        .route("/version", get(discovery::version));
    let private = Router::new()
        .route("/metrics", get(metrics::render))
        .route("/api", get(discovery::core_versions))
        .route("/api/v1", get(discovery::core_resources))
        .route("/apis", get(discovery::groups))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_resources))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::index))
        .route("/openapi/v3/{*path}", get(openapi::group_version))
        .fallback(handlers::dispatch)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    public
        .merge(private)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

async fn authenticate(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented == Some(state.token.as_str()) {
        next.run(req).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// A started apiserver: where it listens and how to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub state: SharedState,
    pub kubeconfig: String,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Opens the store, makes or loads the TLS material and token, binds and serves.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.data_dir)?;
    let creds = tls::Credentials::load_or_create(&config.data_dir, &config)?;
    let listener = tokio::net::TcpListener::bind((config.bind_address, config.port)).await?;
    let addr = listener.local_addr()?;
    let underlay = match &config.underlay_netns {
        Some(name) => {
            let advertise = config.advertise_address.ok_or_else(|| {
                anyhow::anyhow!("listening in network namespace {name} needs an advertise address")
            })?;
            Some(listen_in_netns(
                name,
                SocketAddr::new(advertise, addr.port()),
            )?)
        }
        None => None,
    };
    let state = AppState::open(&config, creds.token.clone(), addr.port()).await?;
    let kubeconfig = creds.kubeconfig(&format!("https://{}", display_addr(addr)));
    if let Some(path) = &config.write_kubeconfig {
        tls::write_private(path, &kubeconfig)?;
    }
    let (shutdown, stop) = tokio::sync::watch::channel(false);
    let router = app(state.clone());
    let acceptor = creds.acceptor()?;
    let mut tasks = Vec::new();
    if let Some(underlay) = underlay {
        let inner = underlay.local_addr()?;
        let serving = tls::serve(underlay, acceptor.clone(), router.clone(), stop.clone());
        tasks.push(tokio::spawn(serving));
        tracing::info!(addr = %inner, netns = ?config.underlay_netns, "apiserver listening in the underlay");
    }
    tasks.push(tokio::spawn(tls::serve(listener, acceptor, router, stop)));
    tracing::info!(%addr, "apiserver listening");
    Ok(Running {
        addr,
        state,
        kubeconfig,
        shutdown,
        tasks,
    })
}

/// The listener inside the underlay namespace: a socket made on a thread that entered
/// the namespace belongs to it for good, whichever thread accepts on it later.
fn listen_in_netns(name: &str, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let ns = netns::open(name)?;
    let listener = netns::run_in(&ns, || {
        std::net::TcpListener::bind(addr)
            .map_err(|e| netns::Error::io(format!("listening on {addr} in {name}"), e))
    })?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

fn display_addr(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;

    async fn state() -> (tempfile::TempDir, SharedState) {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let state = AppState::open(&config, "secret".into(), 6443)
            .await
            .expect("open");
        (dir, state)
    }

    async fn call(
        state: &SharedState,
        method: &str,
        uri: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> (StatusCode, http::HeaderMap, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", "Bearer secret");
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let body = body
            .map(|b| Body::from(b.to_string()))
            .unwrap_or_else(Body::empty);
        let response = app(state.clone())
            .oneshot(req.body(body).expect("request"))
            .await
            .expect("response");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (parts.status, parts.headers, value)
    }

    async fn get(state: &SharedState, uri: &str) -> (StatusCode, http::HeaderMap, Value) {
        call(state, "GET", uri, None, &[]).await
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn requests_without_the_token_get_a_401_status() {
        let (_dir, state) = state().await;
        let req = Request::get("/api/v1/namespaces")
            .body(Body::empty())
            .expect("request");
        let response = app(state).oneshot(req).await.expect("response");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bootstrap_makes_default_namespaces_and_the_kubernetes_service() {
        let (_dir, state) = state().await;
        let (code, _, list) = get(&state, "/api/v1/namespaces").await;
        assert_eq!(code, StatusCode::OK);
        let names: Vec<&str> = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["default", "kube-node-lease", "kube-public", "kube-system"]
        );
        let (_, _, svc) = get(&state, "/api/v1/namespaces/default/services/kubernetes").await;
        assert_eq!(
            (
                svc["spec"]["clusterIP"].as_str(),
                svc["spec"]["ports"][0]["port"].as_i64()
            ),
            (Some("10.96.0.1"), Some(443))
        );
        let (code, _, _) = get(&state, "/api/v1/namespaces/default/endpoints/kubernetes").await;
        assert_eq!(
            code,
            StatusCode::NOT_FOUND,
            "a loopback address is not published as an endpoint"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_advertised_address_is_published_as_the_kubernetes_endpoints() {
        let dir = tempfile::tempdir().expect("temp dir");
        let advertise = IpAddr::from([192, 168, 1, 1]);
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            advertise_address: Some(advertise),
            ..Config::default()
        };
        let state = AppState::open(&config, "secret".into(), 6443)
            .await
            .expect("open");
        let (_, _, ep) = get(&state, "/api/v1/namespaces/default/endpoints/kubernetes").await;
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "192.168.1.1");
        assert_eq!(ep["subsets"][0]["ports"][0]["port"], 6443);
        let (_, _, slice) = get(
            &state,
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes",
        )
        .await;
        assert_eq!(slice["endpoints"][0]["addresses"][0], "192.168.1.1");
        // Restarting on another port moves them, and the Service's targetPort, along.
        drop(state);
        let state = AppState::open(&config, "secret".into(), 7443)
            .await
            .expect("reopen");
        let (_, _, ep) = get(&state, "/api/v1/namespaces/default/endpoints/kubernetes").await;
        assert_eq!(ep["subsets"][0]["ports"][0]["port"], 7443);
        let (_, _, svc) = get(&state, "/api/v1/namespaces/default/services/kubernetes").await;
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 7443);
    }

    /// The specs kept between Service creates are used only while nothing else was
    /// committed: a deleted Service's port is free again, a held one stays taken.
    #[tokio::test(flavor = "multi_thread")]
    async fn node_ports_follow_creates_and_deletes_across_kept_specs() {
        let (_dir, state) = state().await;
        let service = |name: &str| {
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name},
                "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80, "nodePort": 30001}]},
            })
        };
        let json = [("content-type", "application/json")];
        let uri = "/api/v1/namespaces/default/services";
        let create = |name: &'static str| call(&state, "POST", uri, Some(service(name)), &json);
        assert_eq!(create("a").await.0, StatusCode::CREATED);
        let (code, _, status) = create("b").await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("provided port is already allocated"));
        let (code, _, _) = call(&state, "DELETE", &format!("{uri}/a"), None, &[]).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(create("b").await.0, StatusCode::CREATED);
        let (code, _, _) = create("c").await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        let (_, _, b) = get(&state, &format!("{uri}/b")).await;
        let (_, _, list) = get(&state, uri).await;
        let ips: Vec<&str> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["spec"]["clusterIP"].as_str())
            .collect();
        let unique: std::collections::BTreeSet<&&str> = ips.iter().collect();
        assert_eq!(ips.len(), unique.len(), "cluster IPs are unique: {ips:?}");
        assert!(b["spec"]["clusterIP"].is_string());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_invalid_service_is_refused_whole_with_its_causes() {
        let (_dir, state) = state().await;
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "np"},
            "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80, "nodePort": 58080}]},
        });
        let (code, _, status) = call(
            &state,
            "POST",
            "/api/v1/namespaces/default/services",
            Some(svc),
            &[("content-type", "application/json")],
        )
        .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(
            status["details"]["causes"][0]["field"],
            "spec.ports[0].nodePort"
        );
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "FieldValueInvalid"
        );
        let (code, _, _) = get(&state, "/api/v1/namespaces/default/services/np").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn secrets_store_string_data_as_data_and_check_their_type() {
        let (_dir, state) = state().await;
        let json = [("content-type", "application/json")];
        let uri = "/api/v1/namespaces/default/secrets";
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds"},
            "data": {"user": "YWRtaW4="},
            "stringData": {"password": "s3cr3t"},
        });
        let (code, _, created) = call(&state, "POST", uri, Some(secret), &json).await;
        assert_eq!(code, StatusCode::CREATED, "{created}");
        assert_eq!(
            created["data"],
            json!({"password": "czNjcjN0", "user": "YWRtaW4="})
        );
        assert_eq!(created["type"], "Opaque");
        assert!(created.get("stringData").is_none(), "{created}");
        let merge = [("content-type", "application/merge-patch+json")];
        let patch = json!({"stringData": {"user": "root"}});
        let (code, _, patched) = call(
            &state,
            "PATCH",
            &format!("{uri}/creds"),
            Some(patch),
            &merge,
        )
        .await;
        assert_eq!(code, StatusCode::OK, "{patched}");
        assert_eq!(patched["data"]["user"], "cm9vdA==");
        assert!(patched.get("stringData").is_none(), "{patched}");
        let (_, _, stored) = get(&state, &format!("{uri}/creds")).await;
        assert_eq!(stored["data"], patched["data"]);
        assert!(stored.get("stringData").is_none(), "{stored}");

        let retype = json!({"type": "kubernetes.io/basic-auth"});
        let (code, _, status) = call(
            &state,
            "PATCH",
            &format!("{uri}/creds"),
            Some(retype),
            &merge,
        )
        .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            status["message"],
            "Secret \"creds\" is invalid: type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable"
        );

        let tls = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "web-tls"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": "Y2VydA=="},
        });
        let (code, _, status) = call(&state, "POST", uri, Some(tls), &json).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            status["message"],
            "Secret \"web-tls\" is invalid: data[tls.key]: Required value"
        );
        assert_eq!(status["details"]["causes"][0]["field"], "data[tls.key]");
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "FieldValueRequired"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn discovery_answers_in_the_aggregated_form_when_asked() {
        let (_dir, state) = state().await;
        let accept =
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json";
        let (code, headers, list) = call(&state, "GET", "/apis", None, &[("accept", accept)]).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            headers["content-type"],
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
        let apps = list["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .expect("apps group");
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["resource"] == "deployments")
            .expect("deployments");
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["categories"], json!(["all"]));
        let (_, _, core) = call(&state, "GET", "/api", None, &[("accept", accept)]).await;
        let secrets = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["resource"] == "secrets")
            .expect("secrets");
        assert_eq!(
            (&secrets["scope"], &secrets["singularResource"]),
            (&json!("Namespaced"), &json!("secret"))
        );
        assert!(secrets.get("shortNames").is_none(), "{secrets}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn openapi_v3_tells_kubectl_the_server_validates_fields() {
        let (_dir, state) = state().await;
        let (_, _, doc) = get(&state, "/openapi/v3/apis/apps/v1").await;
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        assert!(patch["parameters"]
            .as_array()
            .expect("params")
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        assert!(patch["requestBody"]["content"]
            .get("application/strategic-merge-patch+json")
            .is_some());
        let secret = json!({"group": "", "version": "v1", "kind": "Secret"});
        let (_, _, core) = get(&state, "/openapi/v3/api/v1").await;
        let post = &core["paths"]["/api/v1/namespaces/{namespace}/secrets"]["post"];
        assert_eq!(post["x-kubernetes-group-version-kind"], secret);
        let (_, _, v2) = get(&state, "/openapi/v2").await;
        let put = &v2["paths"]["/api/v1/namespaces/{namespace}/secrets/{name}"]["put"];
        assert_eq!(put["x-kubernetes-group-version-kind"], secret);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn ingresses_without_a_class_get_the_default_ingress_class() {
        let (_dir, state) = state().await;
        let json = [("content-type", "application/json")];
        let classes = "/apis/networking.k8s.io/v1/ingressclasses";
        for (name, default) in [("old", true), ("other", false), ("nginx", true)] {
            let mut class = json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                "metadata": {"name": name},
                "spec": {"controller": "k8s.io/ingress-nginx"},
            });
            if default {
                class["metadata"]["annotations"] =
                    json!({"ingressclass.kubernetes.io/is-default-class": "true"});
            }
            let (code, _, body) = call(&state, "POST", classes, Some(class), &json).await;
            assert_eq!(code, StatusCode::CREATED, "{body}");
            if name == "old" {
                // Creation timestamps have seconds: "nginx" is created later.
                tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            }
        }
        let uri = "/apis/networking.k8s.io/v1/namespaces/default/ingresses";
        let ingress = |name: &str, class: Option<&str>, annotations: Value| {
            let mut ing = json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": name, "annotations": annotations},
                "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}},
            });
            if let Some(class) = class {
                ing["spec"]["ingressClassName"] = json!(class);
            }
            ing
        };
        let (code, _, plain) = call(
            &state,
            "POST",
            uri,
            Some(ingress("plain", None, json!({}))),
            &json,
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{plain}");
        assert_eq!(
            plain["spec"]["ingressClassName"], "nginx",
            "the newest default"
        );
        let named = ingress("named", Some("other"), json!({}));
        let (_, _, named) = call(&state, "POST", uri, Some(named), &json).await;
        assert_eq!(named["spec"]["ingressClassName"], "other");
        let annotated = ingress(
            "annotated",
            None,
            json!({"kubernetes.io/ingress.class": "traefik"}),
        );
        let (_, _, annotated) = call(&state, "POST", uri, Some(annotated), &json).await;
        assert!(
            annotated["spec"].get("ingressClassName").is_none(),
            "{annotated}"
        );
    }
}
