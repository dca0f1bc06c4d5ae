//! HTTPS through the real curl: the redirect of plain HTTP, certificates by SNI, and
//! the fake certificate for names no Ingress covers.

use std::path::Path;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::json;

use crate::harness::{curl, echo, eventually, run, Cluster};
use crate::routing::until;

#[test]
fn tls_hosts_redirect_and_fall_back_to_the_fake_certificate() {
    run(|| async {
        let cluster = Cluster::start(ingress::Options::default()).await;
        cluster.nginx_class(true).await;
        cluster.service("web").await;
        let web = echo(cluster.next_ip(), "web").await;
        cluster.endpoints("web", &[(web, true)]).await;
        let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
        cluster
            .ingress(
                "secure",
                json!({}),
                json!({"tls": [{"hosts": ["secure.example.com"], "secretName": "not-there"}],
                "rules": [
                    {"host": "secure.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": backend}]}},
                    {"host": "plain.example.com", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix", "backend": backend}]}},
                ]}),
            )
            .await;
        assert!(until(&cluster.at("plain.example.com", "/"), 200, "web").await);
        let got = curl(&cluster.at("secure.example.com", "/a/b?c=d")).await;
        assert_eq!(got.status, 308, "{}", got.body);
        assert_eq!(got.header("location"), "https://secure.example.com/a/b?c=d");
        assert!(got
            .body
            .contains("<center><h1>308 Permanent Redirect</h1></center>"));

        let port = cluster.ingress.https.port();
        let resolve = format!("secure.example.com:{port}:127.0.0.1");
        let url = format!("https://secure.example.com:{port}/a");
        let got = curl(&["-v", "-k", "--resolve", &resolve, &url]).await;
        assert_eq!(
            (got.status, got.backend()),
            (200, "web".into()),
            "{}",
            got.stderr
        );
        assert!(
            got.stderr
                .contains("CN=Kubernetes Ingress Controller Fake Certificate"),
            "{}",
            got.stderr
        );
        assert!(
            got.stderr.contains("ALPN: server accepted h2"),
            "{}",
            got.stderr
        );
        let headers = &got.json()["headers"];
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["x-forwarded-port"], port.to_string());
        assert_eq!(headers["host"], format!("secure.example.com:{port}"));
        // Without -k the fake certificate is refused.
        let got = curl(&["--resolve", &resolve, &url]).await;
        assert_eq!(got.status, 0);
        let got = curl(&["-k", "--http1.1", "--resolve", &resolve, &url]).await;
        assert_eq!(got.status, 200);
    });
}

/// A CA of the user's, issuing the certificates of the test's TLS Secrets.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        let pem = params.self_signed(&key).expect("ca").pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `names`, and its key, PEM.
    fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA certificate for curl's `--cacert`.
    fn write(&self, dir: &Path, name: &str) -> String {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).expect("write CA");
        path.display().to_string()
    }
}

/// Creates or replaces the `kubernetes.io/tls` Secret `name` in `default`.
async fn tls_secret(cluster: &Cluster, name: &str, (cert, key): (String, String)) {
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert, "tls.key": key},
    });
    Api::<Secret>::namespaced(cluster.client.clone(), "default")
        .patch(
            name,
            &PatchParams::apply("ingress-test").force(),
            &Patch::Apply(secret),
        )
        .await
        .expect("apply secret");
}

#[test]
fn certificates_by_sni_from_secrets() {
    run(|| async {
        let cluster = Cluster::start(ingress::Options {
            default_certificate: Some(ingress::Key::new("default", "default-cert")),
            ..ingress::Options::default()
        })
        .await;
        cluster.nginx_class(true).await;
        cluster.service("web").await;
        let web = echo(cluster.next_ip(), "web").await;
        cluster.endpoints("web", &[(web, true)]).await;
        let ca = Ca::new("users ca");
        let cacert = ca.write(cluster.dir.path(), "ca.pem");
        tls_secret(&cluster, "a-tls", ca.issue(&["a.example.com"])).await;
        tls_secret(&cluster, "b-tls", ca.issue(&["*.b.example.com"])).await;
        let backend = json!({"service": {"name": "web", "port": {"number": 80}}});
        let rule = |host: &str| {
            json!({"host": host, "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": backend}]}})
        };
        cluster
            .ingress(
                "tls",
                json!({}),
                json!({"tls": [{"hosts": ["a.example.com"], "secretName": "a-tls"},
                               {"hosts": ["*.b.example.com"], "secretName": "b-tls"}],
                       "rules": [rule("a.example.com"), rule("*.b.example.com")]}),
            )
            .await;
        let port = cluster.ingress.https.port();
        let https = |host: &str, cacert: &str| {
            let args = vec![
                "-v".to_string(),
                "--cacert".to_string(),
                cacert.to_string(),
                "--resolve".to_string(),
                format!("{host}:{port}:127.0.0.1"),
                format!("https://{host}:{port}/"),
            ];
            async move { curl(&args).await }
        };
        let verified = eventually(15, || async {
            (https("a.example.com", &cacert).await.status == 200).then_some(())
        })
        .await;
        assert!(
            verified.is_some(),
            "{}",
            https("a.example.com", &cacert).await.stderr
        );
        let got = https("x.b.example.com", &cacert).await;
        assert_eq!(
            (got.status, got.backend()),
            (200, "web".into()),
            "{}",
            got.stderr
        );
        assert_eq!(got.json()["headers"]["x-forwarded-proto"], "https");
        // No Ingress covers this name, and the default certificate's Secret does not
        // exist yet: the fake certificate, which the CA did not sign.
        let got = https("c.example.com", &cacert).await;
        assert_eq!(got.status, 0, "{}", got.stderr);
        tls_secret(&cluster, "default-cert", ca.issue(&["c.example.com"])).await;
        let default = eventually(15, || async {
            (https("c.example.com", &cacert).await.status == 404).then_some(())
        })
        .await;
        assert!(
            default.is_some(),
            "{}",
            https("c.example.com", &cacert).await.stderr
        );

        // A renewed Secret is served from the next handshake on.
        let renewed = Ca::new("renewing ca");
        let renewed_cacert = renewed.write(cluster.dir.path(), "renewed.pem");
        assert_eq!(https("a.example.com", &renewed_cacert).await.status, 0);
        tls_secret(&cluster, "a-tls", renewed.issue(&["a.example.com"])).await;
        let rotated = eventually(15, || async {
            (https("a.example.com", &renewed_cacert).await.status == 200).then_some(())
        })
        .await;
        assert!(rotated.is_some(), "the renewed certificate is never served");
    });
}
