//! Routing by host and path, nginx's headers and error pages, class selection and the
//! default backend, through the real curl.

use std::time::Duration;

use serde_json::json;

use crate::harness::{curl, echo, eventually, refused, run, silent, Cluster};

fn backend(service: &str) -> serde_json::Value {
    json!({"service": {"name": service, "port": {"name": "http"}}})
}

/// Waits until `curl args` answers `status` from `backend` ("" for any).
pub async fn until(args: &[String], status: u16, backend: &str) -> bool {
    eventually(15, || async {
        let got = curl(args).await;
        let matches = got.status == status
            && (backend.is_empty() || got.body.contains(&format!("\"backend\":\"{backend}\"")));
        matches.then_some(())
    })
    .await
    .is_some()
}

#[test]
fn hosts_paths_and_nginx_headers() {
    run(|| async {
        let cluster = Cluster::start(ingress::Options::default()).await;
        cluster.nginx_class(false).await;
        for (service, name) in [
            ("web", "web"),
            ("api", "api"),
            ("wild", "wild"),
            ("any", "any"),
        ] {
            cluster.service(service).await;
            let addr = echo(cluster.next_ip(), name).await;
            cluster.endpoints(service, &[(addr, true)]).await;
        }
        cluster
            .ingress(
                "shop",
                json!({}),
                json!({"ingressClassName": "nginx", "rules": [
                    {"host": "shop.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": backend("web")},
                        {"path": "/api", "pathType": "Prefix", "backend": backend("api")},
                        {"path": "/api/health", "pathType": "Exact", "backend": backend("web")},
                    ]}},
                    {"host": "*.apps.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": backend("wild")}]}},
                    {"http": {"paths": [
                        {"path": "/any", "pathType": "Prefix", "backend": backend("any")}]}},
                ]}),
            )
            .await;
        let url = cluster.http_url("/api/v1/items?page=2");
        assert!(
            until(
                &cluster.at("shop.example.com", "/api/v1/items?page=2"),
                200,
                "api"
            )
            .await
        );
        for (host, path, expected) in [
            ("shop.example.com", "/", "web"),
            ("shop.example.com", "/apiv2", "web"),
            ("shop.example.com", "/api/health", "web"),
            ("shop.example.com", "/api/health/deep", "api"),
            ("a.apps.example.com", "/x", "wild"),
            ("other.example.com", "/any/thing", "any"),
        ] {
            let got = curl(&cluster.at(host, path)).await;
            assert_eq!(
                (got.status, got.backend()),
                (200, expected.into()),
                "{host}{path}"
            );
        }
        for (host, path) in [("b.a.apps.example.com", "/x"), ("other.example.com", "/")] {
            let got = curl(&cluster.at(host, path)).await;
            assert_eq!(got.status, 404, "{host}{path}");
            assert!(got.body.contains("<center><h1>404 Not Found</h1></center>"));
        }

        let got = curl(&[
            "-H",
            "Host: shop.example.com",
            "-H",
            "X-Forwarded-For: 192.0.2.7",
            &url,
        ])
        .await;
        let echoed = got.json();
        let headers = &echoed["headers"];
        assert_eq!(echoed["uri"], "/api/v1/items?page=2");
        assert_eq!(headers["host"], "shop.example.com");
        assert_eq!(headers["x-forwarded-for"], "192.0.2.7, 127.0.0.1");
        assert_eq!(headers["x-real-ip"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-host"], "shop.example.com");
        assert_eq!(
            headers["x-forwarded-port"],
            cluster.ingress.http.port().to_string()
        );
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-request-id"].as_str().unwrap().len(), 32);
        assert_eq!(got.header("server"), "nginx");
        let given = curl(&[
            "-H",
            "Host: shop.example.com",
            "-H",
            "X-Request-ID: abc-123",
            &url,
        ])
        .await
        .json();
        assert_eq!(given["headers"]["x-request-id"], "abc-123");
        let metrics = curl(&[format!("http://{}/metrics", cluster.ingress.healthz)]).await;
        assert!(
            metrics.body.contains(
                "nginx_ingress_controller_requests{host=\"shop.example.com\",ingress=\"shop\",\
                 method=\"GET\",namespace=\"default\",path=\"/api\",service=\"api\",\
                 status=\"200\"}"
            ),
            "{}",
            metrics.body
        );
    });
}

#[test]
fn unavailable_and_failing_backends_answer_as_nginx() {
    run(|| async {
        let cluster = Cluster::start(ingress::Options {
            timeouts: ingress::Timeouts {
                connect: Duration::from_secs(5),
                read: Duration::from_secs(1),
            },
            ..ingress::Options::default()
        })
        .await;
        cluster.nginx_class(true).await;
        for service in ["none-ready", "dead", "half", "slow"] {
            cluster.service(service).await;
        }
        let unready = echo(cluster.next_ip(), "unready").await;
        cluster.endpoints("none-ready", &[(unready, false)]).await;
        let dead = refused(cluster.next_ip()).await;
        cluster.endpoints("dead", &[(dead, true)]).await;
        let live = echo(cluster.next_ip(), "live").await;
        cluster
            .endpoints(
                "half",
                &[(refused(cluster.next_ip()).await, true), (live, true)],
            )
            .await;
        cluster
            .endpoints("slow", &[(silent(cluster.next_ip()).await, true)])
            .await;
        cluster
            .ingress(
                "errors",
                json!({}),
                json!({"rules": [{"host": "errors.example.com", "http": {"paths": [
                    {"path": "/unready", "pathType": "Prefix", "backend": backend("none-ready")},
                    {"path": "/missing", "pathType": "Prefix", "backend": backend("no-such-service")},
                    {"path": "/dead", "pathType": "Prefix", "backend": backend("dead")},
                    {"path": "/half", "pathType": "Prefix", "backend": backend("half")},
                    {"path": "/slow", "pathType": "Prefix", "backend": backend("slow")},
                ]}}]}),
            )
            .await;
        let get = |path: &str| {
            let args = cluster.at("errors.example.com", path);
            async move { curl(&args).await }
        };
        assert!(until(&cluster.at("errors.example.com", "/half"), 200, "live").await);
        // A refused endpoint is passed over for the next one: no request fails.
        for _ in 0..6 {
            let got = get("/half").await;
            assert_eq!((got.status, got.backend()), (200, "live".into()));
        }
        for (path, status, title) in [
            ("/unready", 503, "503 Service Temporarily Unavailable"),
            ("/missing", 503, "503 Service Temporarily Unavailable"),
            ("/dead", 502, "502 Bad Gateway"),
            ("/slow", 504, "504 Gateway Time-out"),
            ("/nothing", 404, "404 Not Found"),
        ] {
            let got = get(path).await;
            assert_eq!(got.status, status, "{path}: {}", got.body);
            assert_eq!(
                got.body,
                format!(
                    "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
                     <center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n\
                     </body>\r\n</html>\r\n"
                ),
                "{path}"
            );
            assert_eq!(got.header("content-type"), "text/html", "{path}");
        }
    });
}

#[test]
fn class_selection_and_default_backends() {
    run(|| async {
        let cluster = Cluster::start(ingress::Options {
            default_backend: Some(ingress::Key::new("default", "fallback")),
            ..ingress::Options::default()
        })
        .await;
        for (service, name) in [("fallback", "fallback"), ("a", "a"), ("b", "b"), ("c", "c")] {
            cluster.service(service).await;
            let addr = echo(cluster.next_ip(), name).await;
            cluster.endpoints(service, &[(addr, true)]).await;
        }
        let rule = |host: &str, service: &str| {
            json!({"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend(service)}]}})
        };
        cluster
            .ingress(
                "other-class",
                json!({}),
                json!({"ingressClassName": "traefik", "rules": [rule("a.example.com", "a")]}),
            )
            .await;
        cluster
            .ingress(
                "annotated",
                json!({"annotations": {"kubernetes.io/ingress.class": "nginx"}}),
                json!({"rules": [rule("b.example.com", "b")]}),
            )
            .await;
        cluster
            .ingress(
                "classless",
                json!({}),
                json!({"rules": [rule("c.example.com", "c")]}),
            )
            .await;
        let to = |host: &str| cluster.at(host, "/");
        assert!(until(&to("b.example.com"), 200, "b").await);
        // Not ours: the --default-backend-service answers.
        let got = curl(&to("a.example.com")).await;
        assert_eq!((got.status, got.backend()), (200, "fallback".into()));
        let got = curl(&to("c.example.com")).await;
        assert_eq!((got.status, got.backend()), (200, "fallback".into()));
        // The IngressClass of our controller, marked default, takes the classless one;
        // an Ingress of class nginx needs that class to exist.
        cluster
            .ingress(
                "by-name",
                json!({}),
                json!({"ingressClassName": "nginx", "rules": [rule("n.example.com", "a")]}),
            )
            .await;
        cluster.nginx_class(true).await;
        assert!(until(&to("c.example.com"), 200, "c").await);
        assert!(until(&to("n.example.com"), 200, "a").await);
        let got = curl(&to("a.example.com")).await;
        assert_eq!(got.backend(), "fallback");
    });
}
