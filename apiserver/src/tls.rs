//! Credentials and the HTTPS listener: a cluster CA and a serving certificate made with
//! rcgen into the data directory, an admin bearer token, and the kubeconfig that
//! carries both to clients. Existing material is reused, so clients keep working
//! across restarts.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Config;

pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub token: String,
}

impl Credentials {
    /// Loads the CA and token from `dir`, or makes them; the serving certificate is
    /// issued anew on every start so that it names the current addresses.
    pub fn load_or_create(dir: &Path, config: &Config) -> anyhow::Result<Self> {
        let tls_dir = dir.join("tls");
        std::fs::create_dir_all(&tls_dir)?;
        let (ca_key_path, ca_path) = (tls_dir.join("ca.key"), tls_dir.join("ca.crt"));
        let (ca_key, ca_pem) = if ca_key_path.exists() && ca_path.exists() {
            let key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?)?;
            (key, std::fs::read_to_string(&ca_path)?)
        } else {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "kubesim-ca");
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key)?;
            write_private(&ca_key_path, &key.serialize_pem())?;
            std::fs::write(&ca_path, cert.pem())?;
            (key, cert.pem())
        };
        let issuer =
            Issuer::from_ca_cert_pem(&ca_pem, &ca_key).context("reading the cluster CA")?;

        let mut sans: Vec<String> = [
            "localhost",
            "127.0.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Ok(net) = api::alloc::IpAllocator::new(&config.service_cidr) {
            sans.push(net.first().to_string());
        }
        if !config.bind_address.is_unspecified() {
            sans.push(config.bind_address.to_string());
        }
        sans.extend(config.advertise_address.map(|ip| ip.to_string()));
        sans.extend(config.tls_san.iter().cloned());
        sans.sort();
        sans.dedup();
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let cert = params.signed_by(&key, &issuer)?;

        let token_path = dir.join("token");
        let token = match std::fs::read_to_string(&token_path) {
            Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let bytes: [u8; 24] = rand::random();
                let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
                write_private(&token_path, &token)?;
                token
            }
        };
        Ok(Credentials {
            ca_pem,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            token,
        })
    }

    /// A kubeconfig with one cluster, user and context, all named `kubesim`.
    pub fn kubeconfig(&self, server: &str) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: kubesim-admin\n  user:\n    token: {token}\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim-admin\n    namespace: default\ncurrent-context: kubesim\npreferences: {{}}\n",
            token = self.token
        )
    }

    pub fn acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        let certs =
            rustls_pemfile::certs(&mut self.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key =
            rustls_pemfile::private_key(&mut self.key_pem.as_bytes())?.context("no private key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Writes a secret readable by its owner only.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Written beside and renamed into place, so a reader that sees the file sees all
    // of it (clients start as soon as the kubeconfig appears).
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let staging = path.with_file_name(format!(".{}.new", name.to_string_lossy()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&staging)
        .with_context(|| format!("writing {}", staging.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&staging, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Accepts TLS connections and serves `router` (HTTP/1.1 and HTTP/2) until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(?err, "accept failed");
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        connections.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(err) => {
                    tracing::debug!(?err, %peer, "tls handshake failed");
                    return;
                }
            };
            if let Err(err) = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(?err, %peer, "connection ended with an error");
            }
        });
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}
