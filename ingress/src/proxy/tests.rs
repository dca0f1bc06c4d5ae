use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::*;
use crate::snapshot::{Config, Objects};
use crate::testing::{fake, ingress, nginx_class, service, slices_at};

const CLIENT: Connection = Connection {
    peer: SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3)),
        5555,
    ),
    local: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 80),
    scheme: Scheme::Http,
};

/// A backend answering every request with JSON: its name, the method, URI and headers.
async fn echo(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(http1::Builder::new().serve_connection(
                TokioIo::new(stream),
                service_fn(move |req: Request<Incoming>| async move {
                    let headers: BTreeMap<String, String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let body = json!({"backend": name, "method": req.method().as_str(),
                                          "uri": req.uri().to_string(), "headers": headers});
                    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
                    response
                        .headers_mut()
                        .insert(SERVER, HeaderValue::from_static("echo"));
                    response
                        .headers_mut()
                        .insert("keep-alive", HeaderValue::from_static("timeout=5"));
                    Ok::<_, Infallible>(response)
                }),
            ));
        }
    });
    addr
}

/// A backend that accepts connections and never answers.
async fn silent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// An address where nothing listens.
async fn refused() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// One Ingress: host `app.example.com` (TLS when `tls`) to Service `web`, whose
/// endpoints are `endpoints`; `/empty` to Service `empty` without endpoints.
fn snapshot(endpoints: &[SocketAddr], tls: bool) -> Snapshot {
    let mut spec = json!({"rules": [{"host": "app.example.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix",
         "backend": {"service": {"name": "web", "port": {"name": "http"}}}},
        {"path": "/empty", "pathType": "Prefix",
         "backend": {"service": {"name": "empty", "port": {"number": 80}}}},
    ]}}]});
    if tls {
        spec["tls"] = json!([{"hosts": ["app.example.com"]}]);
    }
    let objects = Objects {
        ingresses: vec![ingress("app", 0, spec)],
        classes: vec![nginx_class()],
        services: vec![service("web"), service("empty")],
        slices: slices_at("web", endpoints),
        ..Objects::default()
    };
    Snapshot::build(&Config::default(), &objects, &fake(), None)
}

fn request(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header(HOST, host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn send(
    proxy: &Proxy,
    snapshot: &Snapshot,
    request: Request<Full<Bytes>>,
) -> (StatusCode, HeaderMap, String) {
    let response = proxy.handle(snapshot, &CLIENT, request).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[test]
fn upstream_headers_are_nginx_s() {
    let mut incoming = HeaderMap::new();
    for (name, value) in [
        ("host", "app.example.com:8080"),
        ("x-forwarded-for", "192.0.2.1"),
        ("x-forwarded-for", "192.0.2.2"),
        ("x-forwarded-host", "spoofed.example.com"),
        ("x-forwarded-proto", "https"),
        ("connection", "keep-alive, X-Hop"),
        ("x-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy", "http://evil:3128"),
        ("accept", "*/*"),
    ] {
        incoming.append(name, HeaderValue::from_static(value));
    }
    let headers = upstream_headers(&incoming, &CLIENT, "app.example.com:8080", "abc");
    let mut got: Vec<String> = headers
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "accept: */*",
            "host: app.example.com:8080",
            "x-forwarded-for: 192.0.2.1, 192.0.2.2, 10.1.2.3",
            "x-forwarded-host: app.example.com:8080",
            "x-forwarded-port: 80",
            "x-forwarded-proto: http",
            "x-real-ip: 10.1.2.3",
            "x-request-id: abc",
            "x-scheme: http",
        ]
    );
}

#[test]
fn request_ids_are_kept_or_made() {
    let mut headers = HeaderMap::new();
    let made = request_id(&headers);
    assert_eq!(made.len(), 32);
    assert!(made.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(made, request_id(&headers));
    headers.insert("x-request-id", HeaderValue::from_static("given"));
    assert_eq!(request_id(&headers), "given");
}

#[tokio::test]
async fn forwards_to_the_endpoints_round_robin_with_the_client_s_host() {
    let (a, b) = (echo("a").await, echo("b").await);
    let snapshot = snapshot(&[a, b], false);
    let proxy = Proxy::new(Timeouts::default(), Arc::default());
    let mut answered = Vec::new();
    for _ in 0..4 {
        let mut req = request("App.Example.com", "/some/path?q=1");
        req.headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        let (status, headers, body) = send(&proxy, &snapshot, req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers[SERVER], "nginx");
        assert!(!headers.contains_key("keep-alive"));
        let echoed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(echoed["uri"], "/some/path?q=1");
        assert_eq!(echoed["headers"]["host"], "App.Example.com");
        assert_eq!(echoed["headers"]["x-forwarded-for"], "192.0.2.1, 10.1.2.3");
        assert_eq!(echoed["headers"]["x-real-ip"], "10.1.2.3");
        assert_eq!(echoed["headers"]["x-forwarded-proto"], "http");
        assert_eq!(
            echoed["headers"]["x-request-id"].as_str().unwrap().len(),
            32
        );
        answered.push(echoed["backend"].as_str().unwrap().to_string());
    }
    // The endpoints in turn (their order is by address).
    assert_ne!(answered[0], answered[1]);
    assert_eq!(answered[0..2], answered[2..4]);
}

#[tokio::test]
async fn no_rule_is_404_and_no_endpoint_is_503() {
    let snapshot = snapshot(&[], false);
    let proxy = Proxy::new(Timeouts::default(), Arc::default());
    let (status, headers, body) = send(&proxy, &snapshot, request("other.example.com", "/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[http::header::CONTENT_TYPE], "text/html");
    assert_eq!(body, pages::body(StatusCode::NOT_FOUND));
    let (status, _, body) = send(&proxy, &snapshot, request("app.example.com", "/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, pages::body(StatusCode::SERVICE_UNAVAILABLE));
    let (status, _, _) = send(&proxy, &snapshot, request("app.example.com", "/empty/x")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_refused_endpoint_is_skipped_and_all_refused_is_502() {
    let (dead, live) = (refused().await, echo("live").await);
    let proxy = Proxy::new(Timeouts::default(), Arc::default());
    let snapshot_with_one_dead = snapshot(&[dead, live], false);
    for _ in 0..4 {
        let (status, _, body) = send(
            &proxy,
            &snapshot_with_one_dead,
            request("app.example.com", "/"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let all_dead = snapshot(&[dead, refused().await], false);
    let (status, _, body) = send(&proxy, &all_dead, request("app.example.com", "/")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, pages::body(StatusCode::BAD_GATEWAY));
}

#[tokio::test]
async fn a_silent_upstream_is_504_after_the_read_timeout() {
    let snapshot = snapshot(&[silent().await], false);
    let proxy = Proxy::new(
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_millis(300),
        },
        Arc::default(),
    );
    let started = Instant::now();
    let (status, _, body) = send(&proxy, &snapshot, request("app.example.com", "/")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body, pages::body(StatusCode::GATEWAY_TIMEOUT));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn plain_http_to_a_tls_host_redirects_and_large_bodies_are_413() {
    let live = echo("live").await;
    let proxy = Proxy::new(Timeouts::default(), Arc::default());
    let secure = snapshot(&[live], true);
    let (status, headers, _) = send(&proxy, &secure, request("app.example.com:80", "/a?b=c")).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "https://app.example.com/a?b=c");
    let https = Connection {
        scheme: Scheme::Https,
        ..CLIENT
    };
    let response = proxy
        .handle(&secure, &https, request("app.example.com", "/"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echoed: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");

    let plain = snapshot(&[live], false);
    let big = Request::post("/upload")
        .header(HOST, "app.example.com")
        .body(Full::new(Bytes::from(vec![b'x'; MAX_BODY + 1])))
        .unwrap();
    let (status, _, body) = send(&proxy, &plain, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body, pages::body(StatusCode::PAYLOAD_TOO_LARGE));
    let fits = Request::post("/upload")
        .header(HOST, "app.example.com")
        .body(Full::new(Bytes::from(vec![b'x'; MAX_BODY])))
        .unwrap();
    assert_eq!(send(&proxy, &plain, fits).await.0, StatusCode::OK);
}
