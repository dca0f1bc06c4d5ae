//! The HTTP/1.1 serving loop the built-in servers share: one task per connection,
//! header names written in canonical case (`Content-Type`) as nginx and Go write them,
//! and a graceful stop that lets in-flight requests finish.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, UdpSocket};

/// Every response body is a complete buffer.
pub(crate) type Body = Full<Bytes>;

/// The connection a request arrived on.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The client's address, IPv4 clients of a dual-stack socket shown as IPv4.
    pub peer: SocketAddr,
    /// Counts the connections accepted by this server, from 1.
    pub id: u64,
}

/// Binds a TCP port on every address: dual-stack where the namespace has IPv6.
pub(crate) async fn bind_tcp(port: u16) -> io::Result<TcpListener> {
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Err(err) if err.kind() != io::ErrorKind::AddrInUse => {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).await
        }
        bound => bound,
    }
}

/// Binds a UDP port on every address: dual-stack where the namespace has IPv6.
pub(crate) async fn bind_udp(port: u16) -> io::Result<UdpSocket> {
    match UdpSocket::bind((Ipv6Addr::UNSPECIFIED, port)).await {
        Err(err) if err.kind() != io::ErrorKind::AddrInUse => {
            UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).await
        }
        bound => bound,
    }
}

/// `addr` as the client sees itself: `::ffff:10.0.0.1` is `10.0.0.1`.
pub(crate) fn client_addr(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// An HTTP `Date` header value (IMF-fixdate).
pub(crate) fn http_date(time: DateTime<Utc>) -> String {
    time.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then waits for the open
/// connections to finish their requests and close.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, Arc<Connection>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.title_case_headers(true);
    tokio::pin!(shutdown);
    let mut accepted = 0;
    loop {
        let (stream, peer) = tokio::select! {
            result = listener.accept() => match result {
                Ok(connection) => connection,
                Err(err) => {
                    tracing::warn!(?err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        accepted += 1;
        let connection = Arc::new(Connection {
            peer: client_addr(peer),
            id: accepted,
        });
        let handler = handler.clone();
        let service = service_fn(move |request| {
            let response = handler(request, connection.clone());
            async move { Ok::<_, Infallible>(response.await) }
        });
        let served = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = served.await {
                tracing::debug!(?err, %peer, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
}

#[cfg(test)]
pub(crate) mod testing {
    //! A plain HTTP/1.1 client over a TCP stream, for checking the exact bytes served.

    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A response as read off the wire.
    #[derive(Debug)]
    pub(crate) struct RawResponse {
        pub status_line: String,
        /// Header lines in the order and case they were sent.
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl RawResponse {
        pub(crate) fn status(&self) -> u16 {
            self.status_line
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or(0)
        }

        /// The value of a header, matching its name exactly (case included).
        pub(crate) fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }

        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }

    /// Sends `request` (a full request head, `\r\n\r\n` included) with `Connection: close`
    /// semantics expected from the caller, and reads the response until the body's
    /// `Content-Length` (or none, for `HEAD` and bodiless statuses).
    pub(crate) async fn exchange(
        stream: &mut TcpStream,
        request: &str,
        head_only: bool,
    ) -> RawResponse {
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let mut chunk = [0; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before the response head: {buf:?}");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap().to_string();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(": ").unwrap();
                (name.to_string(), value.to_string())
            })
            .collect();
        let length = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let length = if head_only { 0 } else { length };
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < length {
            let mut chunk = [0; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(body.len(), length, "more bytes than Content-Length");
        RawResponse {
            status_line,
            headers,
            body,
        }
    }

    /// One `GET` on a fresh connection.
    pub(crate) async fn get(addr: SocketAddr, path: &str) -> RawResponse {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: test\r\n\r\n");
        exchange(&mut stream, &request, false).await
    }
}
