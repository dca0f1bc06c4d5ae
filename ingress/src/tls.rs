//! HTTPS: certificates from `kubernetes.io/tls` Secrets (`tls.crt` and `tls.key`, PEM),
//! chosen per connection by SNI from the current snapshot; a name no Ingress covers
//! gets the default certificate: the `--default-ssl-certificate` Secret, or the
//! self-signed "Kubernetes Ingress Controller Fake Certificate" made at start, as
//! ingress-nginx makes it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::host::HostMap;
use crate::snapshot::Snapshot;

/// The subject common name of the fake certificate.
pub const FAKE_CERTIFICATE_CN: &str = "Kubernetes Ingress Controller Fake Certificate";
/// The key of the certificate chain in a TLS Secret.
pub const CERT_KEY: &str = "tls.crt";
/// The key of the private key in a TLS Secret.
pub const KEY_KEY: &str = "tls.key";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no {0} in the secret")]
    Missing(&'static str),
    #[error("no PEM certificate in tls.crt")]
    NoCertificate,
    #[error("no PEM private key in tls.key")]
    NoKey,
    #[error("reading PEM: {0}")]
    Pem(#[from] std::io::Error),
    #[error("tls.key: {0}")]
    Key(rustls::Error),
    #[error("tls.key is not the key of the certificate in tls.crt")]
    Mismatch,
    #[error("making the fake certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// A certificate chain and its key, from PEM.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, Error> {
    let chain = rustls_pemfile::certs(&mut &*cert_pem).collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(Error::NoCertificate);
    }
    let key = rustls_pemfile::private_key(&mut &*key_pem)?.ok_or(Error::NoKey)?;
    let key = any_supported_type(&key).map_err(Error::Key)?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(_) => Err(Error::Mismatch),
    }
}

/// The certificate of a TLS Secret.
pub fn from_secret(secret: &Secret) -> Result<CertifiedKey, Error> {
    let data = secret.data.as_ref();
    let field = |key: &'static str| {
        data.and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
            .ok_or(Error::Missing(key))
    };
    certified_key(field(CERT_KEY)?, field(KEY_KEY)?)
}

/// ingress-nginx's default certificate: self-signed, `O=Acme Co`,
/// `CN=Kubernetes Ingress Controller Fake Certificate`, for `ingress.local`.
pub fn fake_certificate() -> Result<CertifiedKey, Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["ingress.local".to_string()])?;
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Acme Co");
    params
        .distinguished_name
        .push(DnType::CommonName, FAKE_CERTIFICATE_CN);
    let cert = params.self_signed(&key)?;
    certified_key(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
}

/// The certificates of a snapshot: per TLS host, and the default one.
#[derive(Debug, Clone)]
pub struct Certificates {
    hosts: HostMap<Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl Certificates {
    pub fn new(default: Arc<CertifiedKey>) -> Certificates {
        Certificates {
            hosts: HostMap::default(),
            default,
        }
    }

    /// Gives `host` (a name or a `*.` wildcard) its certificate, unless it has one.
    pub fn insert(&mut self, host: &str, key: Arc<CertifiedKey>) {
        self.hosts.get_or_insert_with(host, || key);
    }

    /// The certificate for the SNI `server_name`: the host's, else the default.
    pub fn resolve(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        server_name
            .and_then(|name| self.hosts.get(name))
            .unwrap_or(&self.default)
            .clone()
    }
}

/// Chooses the certificate of each handshake from the snapshot current at that moment.
#[derive(Debug)]
pub struct SniResolver {
    state: watch::Receiver<Arc<Snapshot>>,
}

impl SniResolver {
    pub fn new(state: watch::Receiver<Arc<Snapshot>>) -> SniResolver {
        SniResolver { state }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.state
                .borrow()
                .certificates
                .resolve(hello.server_name()),
        )
    }
}

/// The HTTPS listener's configuration: certificates by SNI, HTTP/2 and HTTP/1.1.
pub fn server_config(resolver: SniResolver) -> Result<rustls::ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{CertificateDer, ServerName};
    use serde_json::json;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::snapshot::Objects;
    use crate::testing::{build, ingress, nginx_class, tls_secret, TestCa};

    fn der(pem: &str) -> CertificateDer<'static> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
    }

    #[test]
    fn secrets_need_both_keys_and_a_matching_pair() {
        let ca = TestCa::new();
        let (cert, key) = ca.issue(&["a.example.com"]);
        let (_, other_key) = ca.issue(&["b.example.com"]);
        assert!(from_secret(&tls_secret("ok", &cert, &key)).is_ok());
        let err = |secret: &Secret| from_secret(secret).unwrap_err().to_string();
        assert_eq!(
            err(&tls_secret("mismatch", &cert, &other_key)),
            "tls.key is not the key of the certificate in tls.crt"
        );
        assert_eq!(
            err(&tls_secret("nocert", "garbage", &key)),
            "no PEM certificate in tls.crt"
        );
        assert_eq!(
            err(&tls_secret("nokey", &cert, "")),
            "no PEM private key in tls.key"
        );
        assert_eq!(err(&Secret::default()), "no tls.crt in the secret");
    }

    #[test]
    fn the_fake_certificate_is_ingress_nginx_s() {
        let fake = fake_certificate().unwrap();
        let der = fake.cert[0].as_ref();
        for text in [FAKE_CERTIFICATE_CN, "Acme Co", "ingress.local"] {
            assert!(
                der.windows(text.len()).any(|w| w == text.as_bytes()),
                "{text}"
            );
        }
    }

    /// Real handshakes against the resolver built from Secrets: each name gets its
    /// certificate, which the client verifies against the CA.
    #[tokio::test]
    async fn handshakes_get_the_certificate_of_their_server_name() {
        let ca = TestCa::new();
        let (a_cert, a_key) = ca.issue(&["a.example.com"]);
        let (b_cert, b_key) = ca.issue(&["*.b.example.com"]);
        let objects = Objects {
            ingresses: vec![ingress(
                "tls",
                0,
                json!({"tls": [{"hosts": ["a.example.com"], "secretName": "a"},
                               {"hosts": ["*.b.example.com"], "secretName": "b"}],
                       "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}),
            )],
            classes: vec![nginx_class()],
            secrets: vec![
                tls_secret("a", &a_cert, &a_key),
                tls_secret("b", &b_cert, &b_key),
            ],
            ..Objects::default()
        };
        let (_tx, rx) = watch::channel(Arc::new(build(&objects)));
        let acceptor = TlsAcceptor::from(Arc::new(server_config(SniResolver::new(rx)).unwrap()));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&ca.pem)).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec()];
        let connector = TlsConnector::from(Arc::new(client));
        let handshake = |name: &'static str| {
            let (client_io, server_io) = tokio::io::duplex(1 << 16);
            let acceptor = acceptor.clone();
            tokio::spawn(async move { acceptor.accept(server_io).await });
            let connector = connector.clone();
            async move {
                let stream = connector
                    .connect(ServerName::try_from(name).unwrap(), client_io)
                    .await?;
                let (_, session) = stream.get_ref();
                Ok::<_, std::io::Error>((
                    session.peer_certificates().unwrap()[0].clone(),
                    session.alpn_protocol().map(<[u8]>::to_vec),
                ))
            }
        };
        let (cert, alpn) = handshake("a.example.com").await.unwrap();
        assert_eq!(cert, der(&a_cert));
        assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        assert_eq!(handshake("x.b.example.com").await.unwrap().0, der(&b_cert));
        // Names without a certificate get the fake one, which the CA did not sign.
        let err = handshake("c.example.com").await.unwrap_err();
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }
}
