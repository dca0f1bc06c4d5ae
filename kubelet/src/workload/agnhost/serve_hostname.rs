//! `agnhost serve-hostname`: answers every HTTP request, TCP connection or UDP datagram
//! with the host name (the pod's name), as `test/images/agnhost/serve-hostname` does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};

use super::go;
use crate::workload::flags::Kind;
use crate::workload::http::{self, Connection};

const FLAGS: &[(&str, Kind)] = &[
    ("tcp", Kind::Bool),
    ("udp", Kind::Bool),
    ("http", Kind::Bool),
    ("close", Kind::Bool),
    ("port", Kind::Value),
];

/// How long serve-hostname lingers after SIGTERM, waiting to be killed.
const AWAIT_DELETION: Duration = Duration::from_secs(60);

/// The sockets to answer on.
#[derive(Debug, Default)]
pub(crate) struct Servers {
    pub tcp: Option<TcpListener>,
    pub udp: Option<UdpSocket>,
    pub http: Option<TcpListener>,
    /// Ask HTTP clients to close the connection after each request.
    pub close: bool,
}

/// `agnhost serve-hostname [flags]`.
pub(crate) async fn main(args: &[String]) -> i32 {
    let flags = match super::parse_flags("serve-hostname", args, FLAGS) {
        Ok(flags) => flags,
        Err(code) => return code,
    };
    if !flags.positional.is_empty() {
        let received = flags.positional.len();
        let message = format!("accepts at most 0 arg(s), received {received}");
        return super::usage_error("serve-hostname", &message);
    }
    let parsed = (|| {
        Ok::<_, crate::workload::flags::Error>((
            flags.bool("tcp", false)?,
            flags.bool("udp", false)?,
            flags.bool("http", true)?,
            flags.bool("close", false)?,
            flags.int("port", 9376)?,
        ))
    })();
    let (tcp, udp, serve_http, close, port) = match parsed {
        Ok(values) => values,
        Err(err) => return super::flag_error("serve-hostname", &err),
    };
    if serve_http && (tcp || udp) {
        go::log("Can't server TCP/UDP mode and HTTP mode at the same time");
        return 1;
    }
    let Ok(port) = u16::try_from(port) else {
        go::log(format!(
            "Error from net.Listen(): listen tcp: address {port}: invalid port"
        ));
        return 1;
    };
    let listen_failed = |err: std::io::Error| {
        go::log(format!(
            "Error from net.Listen(): listen tcp :{port}: bind: {}",
            go::errno_text(&err)
        ));
        1
    };
    let mut servers = Servers {
        close,
        ..Servers::default()
    };
    if tcp {
        match http::bind_tcp(port).await {
            Ok(listener) => servers.tcp = Some(listener),
            Err(err) => return listen_failed(err),
        }
    }
    if udp {
        match http::bind_udp(port).await {
            Ok(socket) => servers.udp = Some(socket),
            Err(err) => {
                go::log(format!(
                    "Error from ListenUDP(): listen udp :{port}: bind: {}",
                    go::errno_text(&err)
                ));
                return 1;
            }
        }
    }
    if serve_http {
        match http::bind_tcp(port).await {
            Ok(listener) => servers.http = Some(listener),
            Err(err) => return listen_failed(err),
        }
    }
    run(servers, port, super::sigterm()).await
}

/// Answers on `servers` until `terminated` completes, then lingers as agnhost does
/// before exiting 0.
pub(crate) async fn run(servers: Servers, port: u16, terminated: impl Future<Output = ()>) -> i32 {
    let hostname = go::hostname();
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = servers.tcp {
        tasks.spawn(serve_tcp(listener, hostname.clone()));
    }
    if let Some(socket) = servers.udp {
        tasks.spawn(serve_udp(socket, hostname.clone()));
    }
    if let Some(listener) = servers.http {
        let (hostname, close) = (Arc::new(hostname), servers.close);
        let handler = move |request: Request<Incoming>, connection: Arc<Connection>| {
            let hostname = hostname.clone();
            async move {
                drop(request);
                go::log(format!("HTTP request from {}", connection.peer));
                let headers = if close {
                    vec![(header::CONNECTION, "close".to_string())]
                } else {
                    Vec::new()
                };
                go::response(StatusCode::OK, headers, hostname.as_bytes().to_vec())
            }
        };
        tasks.spawn(http::serve(listener, handler, std::future::pending()));
    }
    go::log(format!("Serving on port {port}.\n"));
    tokio::pin!(terminated);
    tokio::select! {
        () = &mut terminated => {}
        Some(_) = tasks.join_next() => return 1,
    }
    go::log("Shutting down after receiving signal: terminated.\n");
    go::log("Awaiting pod deletion.\n");
    tokio::time::sleep(AWAIT_DELETION).await;
    0
}

async fn serve_tcp(listener: TcpListener, hostname: String) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                go::log(format!("Error from Accept(): {err}"));
                return;
            }
        };
        go::log(format!("TCP request from {}", http::client_addr(peer)));
        if let Err(err) = stream.write_all(hostname.as_bytes()).await {
            tracing::debug!(?err, %peer, "hostname not delivered");
        }
    }
}

async fn serve_udp(socket: UdpSocket, hostname: String) {
    let mut buf = [0; 16];
    loop {
        let peer = match socket.recv_from(&mut buf).await {
            Ok((_, peer)) => peer,
            Err(err) => {
                go::log(format!("Error from ReadFrom(): {err}"));
                return;
            }
        };
        go::log(format!("UDP request from {}", http::client_addr(peer)));
        if let Err(err) = socket.send_to(hostname.as_bytes(), peer).await {
            tracing::debug!(?err, %peer, "hostname not delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpStream;

    use super::*;
    use crate::workload::http::testing::{exchange, get};

    async fn local_tcp() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    #[tokio::test]
    async fn answers_over_http_tcp_and_udp() {
        let (http_listener, http_addr) = local_tcp().await;
        let (tcp_listener, tcp_addr) = local_tcp().await;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let udp_addr = socket.local_addr().unwrap();
        let servers = Servers {
            tcp: Some(tcp_listener),
            udp: Some(socket),
            http: Some(http_listener),
            close: false,
        };
        let running = tokio::spawn(run(servers, 9376, std::future::pending()));
        let hostname = go::hostname();

        let response = get(http_addr, "/any/path").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text(), hostname);
        assert_eq!(response.header("Connection"), None);

        let mut stream = TcpStream::connect(tcp_addr).await.unwrap();
        let mut received = String::new();
        stream.read_to_string(&mut received).await.unwrap();
        assert_eq!(received, hostname, "the server writes the name and closes");

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client
            .send_to(b"anything at all, even long", udp_addr)
            .await
            .unwrap();
        let mut buf = [0; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], hostname.as_bytes());
        running.abort();
    }

    #[tokio::test]
    async fn close_asks_clients_to_close() {
        let (listener, addr) = local_tcp().await;
        let servers = Servers {
            http: Some(listener),
            close: true,
            ..Servers::default()
        };
        let running = tokio::spawn(run(servers, 9376, std::future::pending()));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let response = exchange(&mut stream, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false).await;
        assert_eq!(response.header("Connection"), Some("close"));
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the server closed the connection");
        running.abort();
    }

    #[tokio::test]
    async fn http_with_tcp_is_refused() {
        let args = ["--tcp".to_string(), "--port=0".to_string()];
        assert_eq!(main(&args).await, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lingers_a_minute_after_sigterm() {
        let started = tokio::time::Instant::now();
        let code = run(Servers::default(), 9376, std::future::ready(())).await;
        assert_eq!(code, 0);
        assert_eq!(started.elapsed(), AWAIT_DELETION);
    }
}
