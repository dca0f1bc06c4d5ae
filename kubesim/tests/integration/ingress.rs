//! The ingress controller on a real cluster, as `kubesim up` installs it (ingress-nginx's
//! layout: namespace ingress-nginx, IngressClass nginx as the default, a LoadBalancer
//! Service with `externalTrafficPolicy: Local`), driven from the external host with curl:
//! seed 004's fan-out, headers, TLS by SNI, and nginx's error answers.

use crate::harness::{eventually, manifest};
use crate::netcluster::NetCluster;

/// The ingress controller's load-balancer address.
fn ingress_address(cluster: &NetCluster) -> String {
    let ip = eventually(30, || {
        let ip = cluster.ok(&[
            "get",
            "svc",
            "-n",
            "ingress-nginx",
            "ingress-nginx-controller",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        (!ip.is_empty()).then_some(ip)
    });
    ip.unwrap_or_else(|| panic!("the ingress controller has no address:\n{}", cluster.logs()))
}

/// curl from the external host with `args`: the body and, on the last line, the status.
fn curl(cluster: &NetCluster, args: &[&str]) -> (String, String) {
    let mut command = vec!["curl", "-s", "-m", "3", "-w", "\n%{http_code}"];
    command.extend(args);
    let out = cluster.in_netns(cluster.topology().external_netns(), &command);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_owned(), code.to_owned())
}

/// A request with a Host header to the ingress address, retried until its status is
/// `code` (the controller picks up new Ingresses and endpoints within moments).
fn expect(cluster: &NetCluster, lb: &str, host: &str, path: &str, code: &str) -> String {
    let url = format!("http://{lb}{path}");
    let header = format!("Host: {host}");
    eventually(30, || {
        let (body, got) = curl(cluster, &["-H", &header, &url]);
        (got == code).then_some(body)
    })
    .unwrap_or_else(|| {
        panic!(
            "{host}{path}: wanted {code}, got {:?}\n{}",
            curl(cluster, &["-H", &header, &url]),
            cluster.logs()
        )
    })
}

#[test]
fn seed_004_fan_out_from_the_external_host() {
    let cluster = NetCluster::start_with_ingress(2);
    for file in ["004-fanout-backends.yaml", "004-ingress.yaml"] {
        cluster.ok(&["apply", "-f", &manifest(file).to_string_lossy()]);
    }
    for deployment in ["service1", "service2", "service3"] {
        cluster.ok(&[
            "rollout",
            "status",
            &format!("deployment/{deployment}"),
            "--timeout=90s",
        ]);
    }
    let lb = ingress_address(&cluster);
    let table = [
        ("api.myurl.com", "/foo", "service1-"),
        ("api.myurl.com", "/foo/", "service1-"),
        ("api.myurl.com", "/foo/bar", "service1-"),
        ("api.myurl.com", "/bar", "service2-"),
        ("api.myurl.com", "/bar/baz", "service2-"),
        ("website.myurl.com", "/", "service3-"),
        ("website.myurl.com", "/anything/else", "service3-"),
    ];
    for (host, path, backend) in table {
        let body = expect(&cluster, &lb, host, path, "200");
        assert!(
            body.starts_with(backend),
            "{host}{path} should reach {backend}…, got {body:?}"
        );
    }
    // Prefix matching is by path element: /foobar is not under /foo.
    expect(&cluster, &lb, "api.myurl.com", "/foobar", "404");
    expect(&cluster, &lb, "api.myurl.com", "/", "404");
    expect(&cluster, &lb, "unknown.myurl.com", "/foo", "404");
    // As a browser would ask, with the names resolving to the ingress address.
    let (body, code) = curl(
        &cluster,
        &[
            "--resolve",
            &format!("api.myurl.com:80:{lb}"),
            "http://api.myurl.com/bar",
        ],
    );
    assert_eq!(code, "200");
    assert!(body.starts_with("service2-"), "{body}");

    let status = eventually(30, || {
        let out = cluster.ok(&["get", "ingress", "simple-fanout-example"]);
        out.contains(&lb).then_some(out)
    })
    .unwrap_or_else(|| {
        panic!(
            "the Ingress's status never showed {lb}:\n{}",
            cluster.ok(&["get", "ingress", "-o", "yaml"])
        )
    });
    let row = status.lines().nth(1).unwrap_or_default();
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &columns[..5],
        [
            "simple-fanout-example",
            "nginx",
            "api.myurl.com,website.myurl.com",
            lb.as_str(),
            "80"
        ],
        "{status}"
    );
}

const ECHO: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: agnhost
        image: registry.k8s.io/e2e-test-images/agnhost:2.53
        args: ["netexec", "--http-port=8080"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: web, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: empty}
spec:
  selector: {app: nothing-here}
  ports: [{port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: echo}
spec:
  tls:
  - hosts: [secure.example]
    secretName: secure-tls
  rules:
  - host: echo.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
      - {path: /by-name, pathType: Exact, backend: {service: {name: echo, port: {name: web}}}}
  - host: secure.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: echo, port: {number: 80}}}}
  - host: empty.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: empty, port: {number: 80}}}}
  - host: missing.example
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: missing, port: {number: 80}}}}
"#;

#[test]
fn headers_tls_and_errors_through_the_ingress_controller() {
    let cluster = NetCluster::start_with_ingress(2);
    let key = rcgen::generate_simple_self_signed(vec!["secure.example".to_owned()])
        .expect("a certificate");
    let cert = cluster.file("tls.crt", &key.cert.pem());
    let private = cluster.file("tls.key", &key.signing_key.serialize_pem());
    cluster.ok(&[
        "create",
        "secret",
        "tls",
        "secure-tls",
        "--cert",
        &cert,
        "--key",
        &private,
    ]);
    cluster.ok(&["apply", "-f", &cluster.file("echo.yaml", ECHO)]);
    cluster.ok(&["rollout", "status", "deployment/echo", "--timeout=90s"]);
    let lb = ingress_address(&cluster);

    assert!(expect(&cluster, &lb, "echo.example", "/hostname", "200").starts_with("echo-"));
    assert!(expect(&cluster, &lb, "echo.example", "/by-name", "200").starts_with("NOW:"));
    // The LoadBalancer keeps the client's address (externalTrafficPolicy: Local), and
    // the controller passes it on.
    let header = |name: &str| {
        expect(
            &cluster,
            &lb,
            "echo.example",
            &format!("/header?key={name}"),
            "200",
        )
    };
    assert_eq!(header("X-Forwarded-For"), "192.168.1.100");
    assert_eq!(header("X-Real-IP"), "192.168.1.100");
    assert_eq!(header("X-Forwarded-Host"), "echo.example");
    assert_eq!(header("X-Forwarded-Proto"), "http");
    assert_eq!(header("Host"), "echo.example");

    let (body, code) = curl(
        &cluster,
        &["-H", "Host: empty.example", &format!("http://{lb}/")],
    );
    assert_eq!(code, "503", "{body}");
    assert!(
        body.contains("503 Service Temporarily Unavailable"),
        "{body}"
    );
    expect(&cluster, &lb, "missing.example", "/", "503");

    // TLS by SNI with the Secret's certificate; plain HTTP to that host is redirected.
    let resolve = format!("secure.example:443:{lb}");
    let served = eventually(30, || {
        let (body, code) = curl(
            &cluster,
            &[
                "--resolve",
                &resolve,
                "--cacert",
                &cert,
                "https://secure.example/header?key=X-Forwarded-Proto",
            ],
        );
        (code == "200").then_some(body)
    });
    assert_eq!(
        served.as_deref(),
        Some("https"),
        "HTTPS through the ingress:\n{}",
        cluster.logs()
    );
    let redirect = cluster.in_netns(
        cluster.topology().external_netns(),
        &[
            "curl",
            "-s",
            "-m",
            "3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            "Host: secure.example",
            &format!("http://{lb}/x"),
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&redirect.stdout),
        "308 https://secure.example/x"
    );
}
