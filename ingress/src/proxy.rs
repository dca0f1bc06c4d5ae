//! The reverse proxy: one request against one snapshot. The request is routed by host
//! and path, redirected to HTTPS when its host has TLS, answered by the built-in pages
//! when there is no backend (404) or no endpoint (503), else buffered (up to
//! ingress-nginx's `proxy-body-size` of 1 MiB, 413 beyond) and sent over HTTP/1.1 to
//! the upstream's endpoints in round-robin order through a keep-alive pool.
//!
//! As nginx with ingress-nginx's defaults: the `Host` header is kept, `X-Request-ID`
//! (kept or made), `X-Real-IP`, `X-Forwarded-For` (the client appended),
//! `X-Forwarded-Host`, `X-Forwarded-Port`, `X-Forwarded-Proto` and `X-Scheme` are set,
//! hop-by-hop headers are dropped; a failed connection or a timeout moves on to the
//! next endpoint (`proxy_next_upstream error timeout`, 3 tries; after the request
//! was sent only for idempotent methods); the last failure answers 502 Bad Gateway,
//! or 504 Gateway Time-out when it was a timeout (connecting, or waiting longer than
//! the read timeout for the response or between two reads of its body).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, CONNECTION, HOST, SERVER};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Sleep;

use crate::host::request_host;
use crate::metrics::{Labels, Metrics};
use crate::pages;
use crate::path::normalize;
use crate::snapshot::{Backend, Snapshot};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the proxy gives.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// ingress-nginx's `proxy-body-size` (nginx's `client_max_body_size`): 1 MiB.
pub const MAX_BODY: usize = 1 << 20;
/// ingress-nginx's `proxy-next-upstream-tries`.
pub const NEXT_UPSTREAM_TRIES: usize = 3;
/// ingress-nginx's `upstream-keepalive-connections` and `-timeout`.
const KEEPALIVE_CONNECTIONS: usize = 320;
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Headers that belong to one connection and are not forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The client connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Connection {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub scheme: Scheme,
}

/// ingress-nginx's `proxy-connect-timeout` and `proxy-read-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(60),
        }
    }
}

/// The upstream side: a pooled HTTP/1.1 client.
pub struct Proxy {
    client: Client<HttpConnector, Full<Bytes>>,
    timeouts: Timeouts,
    metrics: Arc<Metrics>,
}

/// What routed a request and where it went, for the access log and the metrics.
struct Outcome {
    labels: Labels,
    upstream: Option<String>,
    endpoint: Option<SocketAddr>,
}

impl Proxy {
    pub fn new(timeouts: Timeouts, metrics: Arc<Metrics>) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(KEEPALIVE_TIMEOUT)
            .pool_max_idle_per_host(KEEPALIVE_CONNECTIONS)
            .build(connector);
        Proxy {
            client,
            timeouts,
            metrics,
        }
    }

    /// Answers `request` by `snapshot`, which the caller took when the request came.
    pub async fn handle<B>(
        &self,
        snapshot: &Snapshot,
        connection: &Connection,
        request: Request<B>,
    ) -> Response<Body>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let method = request.method().clone();
        let uri = request.uri().clone();
        let version = request.version();
        let request_id = request_id(request.headers());
        let (response, outcome) = self
            .forward(snapshot, connection, request, &request_id)
            .await;
        let status = response.status().as_u16();
        tracing::info!(
            remote = %connection.peer.ip(),
            request = %format_args!("{method} {uri} {version:?}"),
            status,
            upstream = outcome.upstream.as_deref().unwrap_or("-"),
            upstream_addr = %outcome.endpoint.map_or("-".to_string(), |e| e.to_string()),
            request_time = started.elapsed().as_secs_f64(),
            req_id = %request_id,
            "access"
        );
        self.metrics
            .request(outcome.labels, method.as_str(), status);
        response
    }

    async fn forward<B>(
        &self,
        snapshot: &Snapshot,
        connection: &Connection,
        request: Request<B>,
        request_id: &str,
    ) -> (Response<Body>, Outcome)
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let authority = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let host = request_host(&authority);
        let request_uri = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let route = snapshot.route(&host, &normalize(parts.uri.path()));
        let mut outcome = Outcome {
            labels: Labels::of(&route),
            upstream: None,
            endpoint: None,
        };
        if connection.scheme == Scheme::Http && route.server.tls {
            return (pages::redirect_to_https(&host, request_uri), outcome);
        }
        let upstream = match route.backend {
            Backend::NotFound => return (pages::error(StatusCode::NOT_FOUND), outcome),
            Backend::Upstream(upstream) => upstream,
        };
        outcome.upstream = Some(upstream.name.clone());
        if upstream.endpoints.is_empty() {
            return (pages::error(StatusCode::SERVICE_UNAVAILABLE), outcome);
        }
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.is::<LengthLimitError>() => {
                return (pages::error(StatusCode::PAYLOAD_TOO_LARGE), outcome)
            }
            Err(_) => return (pages::error(StatusCode::BAD_REQUEST), outcome),
        };
        let headers = upstream_headers(&parts.headers, connection, &authority, request_id);
        let mut failure = StatusCode::BAD_GATEWAY;
        for endpoint in upstream.attempts().take(NEXT_UPSTREAM_TRIES) {
            outcome.endpoint = Some(endpoint);
            let mut outgoing = Request::new(Full::new(body.clone()));
            *outgoing.method_mut() = parts.method.clone();
            *outgoing.version_mut() = Version::HTTP_11;
            *outgoing.headers_mut() = headers.clone();
            match format!("http://{endpoint}{request_uri}").parse() {
                Ok(uri) => *outgoing.uri_mut() = uri,
                Err(_) => return (pages::error(StatusCode::BAD_REQUEST), outcome),
            }
            let sent = match tokio::time::timeout(self.timeouts.read, self.client.request(outgoing))
                .await
            {
                Ok(Ok(response)) => return (self.relay(response), outcome),
                Ok(Err(err)) => {
                    let timed_out = is_timeout(&err);
                    failure = if timed_out {
                        StatusCode::GATEWAY_TIMEOUT
                    } else {
                        StatusCode::BAD_GATEWAY
                    };
                    let what = match (timed_out, err.is_connect()) {
                        (true, _) => "upstream timed out while connecting to upstream",
                        (false, true) => "connect() failed while connecting to upstream",
                        (false, false) => "upstream failed while reading response header",
                    };
                    tracing::warn!(
                        upstream = %upstream.name, %endpoint, host = %host,
                        err = %error_chain(&err), "{what}"
                    );
                    !err.is_connect()
                }
                Err(_) => {
                    failure = StatusCode::GATEWAY_TIMEOUT;
                    tracing::warn!(
                        upstream = %upstream.name, %endpoint, host = %host,
                        "upstream timed out while reading response header from upstream"
                    );
                    true
                }
            };
            if sent && !is_idempotent(&parts.method) {
                break;
            }
        }
        (pages::error(failure), outcome)
    }

    /// The upstream's response as the client gets it.
    fn relay(&self, response: Response<Incoming>) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(SERVER, HeaderValue::from_static(pages::SERVER_NAME));
        Response::from_parts(
            parts,
            ReadTimeout::new(body, self.timeouts.read).boxed_unsync(),
        )
    }
}

/// The client's `X-Request-ID`, or a new one (32 hex digits, as nginx's `$request_id`).
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map_or_else(
            || {
                rand::random::<[u8; 16]>()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            },
            str::to_string,
        )
}

fn is_idempotent(method: &Method) -> bool {
    !matches!(*method, Method::POST | Method::PATCH) && method != "LOCK"
}

fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        current = e.source();
    }
    false
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

/// Removes the hop-by-hop headers and those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The headers of the request sent upstream, from the client's `incoming` ones.
/// `authority` is the client's `Host` (or, over HTTP/2, the `:authority`).
pub fn upstream_headers(
    incoming: &HeaderMap,
    connection: &Connection,
    authority: &str,
    request_id: &str,
) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    // httpoxy: a `Proxy` header must not reach CGI-style backends as HTTP_PROXY.
    headers.remove("proxy");
    let client_ip = connection.peer.ip().to_string();
    let forwarded_for = incoming
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .chain([client_ip.as_str()])
        .collect::<Vec<_>>()
        .join(", ");
    let scheme = connection.scheme.as_str();
    let port = connection.local.port().to_string();
    for (name, value) in [
        ("host", authority),
        ("x-request-id", request_id),
        ("x-real-ip", client_ip.as_str()),
        ("x-forwarded-for", forwarded_for.as_str()),
        ("x-forwarded-host", authority),
        ("x-forwarded-port", port.as_str()),
        ("x-forwarded-proto", scheme),
        ("x-scheme", scheme),
    ] {
        match HeaderValue::from_str(value) {
            Ok(value) if !value.is_empty() => {
                headers.insert(name, value);
            }
            _ => {
                headers.remove(name);
            }
        }
    }
    headers
}

/// An upstream body that fails when the upstream sends nothing for `timeout` while
/// the client waits for more (nginx's `proxy_read_timeout` between two reads).
struct ReadTimeout<B> {
    inner: B,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    waiting: bool,
}

impl<B> ReadTimeout<B> {
    fn new(inner: B, timeout: Duration) -> ReadTimeout<B> {
        ReadTimeout {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
        }
    }
}

impl<B> HttpBody for ReadTimeout<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let deadline = tokio::time::Instant::now() + this.timeout;
                    this.sleep.as_mut().reset(deadline);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(
                        "upstream timed out while reading the body".into(),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
