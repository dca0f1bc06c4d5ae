//! `agnhost netexec`: the HTTP server of Kubernetes' network e2e tests (`/hostname`,
//! `/clientip`, `/echo`, `/dial`, `/shell`, `/exit`, …) and its UDP server (`hostname`,
//! `echo <msg>`, `clientip`), answering as `test/images/agnhost/netexec` does.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::go;
use crate::workload::flags::Kind;
use crate::workload::http::{self, Body, Connection};

/// How long `/dial` waits for one HTTP or UDP answer, as agnhost's client does.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

const FLAGS: &[(&str, Kind)] = &[
    ("http-port", Kind::Value),
    ("udp-port", Kind::Value),
    ("sctp-port", Kind::Value),
    ("tls-cert-file", Kind::Value),
    ("tls-private-key-file", Kind::Value),
    ("http-override", Kind::Value),
    ("udp-listen-addresses", Kind::Value),
    ("delay-shutdown", Kind::Value),
];

/// What the servers do besides answering.
#[derive(Debug, Clone, Default)]
pub(crate) struct Config {
    /// Answer every HTTP request as a `GET` of this path and query.
    pub http_override: Option<String>,
    /// Seconds to keep serving after SIGTERM.
    pub delay_shutdown: u64,
}

/// A request to end the process, from `/exit` or `/shutdown` or a failed UDP server.
#[derive(Debug)]
enum Exit {
    Now(i32),
    Graceful { code: i32, timeout: Duration },
}

#[derive(Debug)]
struct State {
    started: Instant,
    /// Set once a UDP server is receiving (agnhost's `serverReady`).
    ready: AtomicBool,
    terminating: AtomicBool,
    exits: mpsc::Sender<Exit>,
    config: Config,
}

/// `agnhost netexec [flags]`.
pub(crate) async fn main(args: &[String]) -> i32 {
    let flags = match super::parse_flags("netexec", args, FLAGS) {
        Ok(flags) => flags,
        Err(code) => return code,
    };
    if !flags.positional.is_empty() {
        let received = flags.positional.len();
        let message = format!("accepts at most 0 arg(s), received {received}");
        return super::usage_error("netexec", &message);
    }
    let parsed = (|| {
        Ok::<_, crate::workload::flags::Error>((
            flags.int("http-port", 8080)?,
            flags.int("udp-port", 8081)?,
            flags.int("sctp-port", -1)?,
            flags.int("delay-shutdown", 0)?,
        ))
    })();
    let (http_port, udp_port, sctp_port, delay_shutdown) = match parsed {
        Ok(values) => values,
        Err(err) => return super::flag_error("netexec", &err),
    };
    if flags.get("tls-cert-file").is_some_and(|f| !f.is_empty()) {
        go::log("kubesim's netexec serves plain HTTP only: --tls-cert-file is not supported");
        return 1;
    }
    if sctp_port != -1 {
        go::log("kubesim's netexec has no SCTP server: --sctp-port is ignored");
    }
    let Ok(http_port) = u16::try_from(http_port) else {
        go::log(format!("listen tcp: address {http_port}: invalid port"));
        return 1;
    };
    let mut udp = Vec::new();
    if udp_port != -1 {
        let Ok(port) = u16::try_from(udp_port) else {
            go::log(format!(
                "Error occurred: failed to resolve UDP address for port {udp_port}:address {udp_port}: invalid port"
            ));
            return 1;
        };
        let addresses = flags.string("udp-listen-addresses", "");
        let bound = if addresses.is_empty() {
            http::bind_udp(port).await.map(|socket| vec![socket])
        } else {
            bind_udp_addresses(&addresses, port).await
        };
        match bound {
            Ok(sockets) => udp = sockets,
            Err(err) => {
                go::log(format!(
                    "Error occurred: failed to create listener for UDP address :{port}:{err}"
                ));
                return 1;
            }
        }
    }
    let listener = match http::bind_tcp(http_port).await {
        Ok(listener) => listener,
        Err(err) => {
            go::log(format!(
                "listen tcp :{http_port}: bind: {}",
                go::errno_text(&err)
            ));
            return 1;
        }
    };
    let config = Config {
        http_override: flags
            .get("http-override")
            .filter(|o| !o.is_empty())
            .map(str::to_string),
        delay_shutdown: u64::try_from(delay_shutdown).unwrap_or(0),
    };
    run(listener, udp, config, super::sigterm()).await
}

/// Binds the UDP port on each address of a comma-separated list, each address once.
async fn bind_udp_addresses(addresses: &str, port: u16) -> std::io::Result<Vec<UdpSocket>> {
    let mut ips = Vec::new();
    for address in addresses.split(',') {
        let ip: IpAddr = address.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("parseAddress: invalid address {address}"),
            )
        })?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let mut sockets = Vec::new();
    for ip in ips {
        sockets.push(UdpSocket::bind((ip, port)).await?);
    }
    Ok(sockets)
}

/// Serves HTTP on `listener` and UDP on `udp` until an exit is requested, or
/// `terminated` completes (SIGTERM) and the shutdown delay has passed; returns the
/// process's exit code.
pub(crate) async fn run(
    listener: TcpListener,
    udp: Vec<UdpSocket>,
    config: Config,
    terminated: impl Future<Output = ()>,
) -> i32 {
    let (exits, mut exit_requests) = mpsc::channel(4);
    let state = Arc::new(State {
        started: Instant::now(),
        ready: AtomicBool::new(false),
        terminating: AtomicBool::new(false),
        exits,
        config,
    });
    for socket in udp {
        tokio::spawn(serve_udp(socket, state.clone()));
    }
    let port = listener.local_addr().map_or(0, |addr| addr.port());
    go::log(format!("Started HTTP server on port {port}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handler = {
        let state = state.clone();
        move |request: Request<Incoming>, connection: Arc<Connection>| {
            let state = state.clone();
            async move { handle(&state, request, &connection).await }
        }
    };
    let server = http::serve(listener, handler, async {
        // A dropped sender stops the server as well.
        let _ = stopped.await;
    });
    tokio::pin!(server, terminated);
    // The server ends only after `stop`; its arms below are there to keep it polled.
    let delay = tokio::select! {
        () = &mut server => return 1,
        Some(exit) = exit_requests.recv() => match exit {
            Exit::Now(code) => return code,
            Exit::Graceful { code, timeout } => {
                // The receiver is the server's shutdown future, alive while it runs.
                let _ = stop.send(());
                let outcome = match tokio::time::timeout(timeout, &mut server).await {
                    Ok(()) => "<nil>",
                    Err(_) => "context deadline exceeded",
                };
                go::log(format!("Graceful shutdown completed with: {outcome}"));
                return code;
            }
        },
        () = &mut terminated => state.config.delay_shutdown,
    };
    state.terminating.store(true, Ordering::SeqCst);
    if delay > 0 {
        go::log(format!("Sleeping {delay} seconds before terminating..."));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(delay)) => {}
            () = &mut server => return 1,
            Some(Exit::Now(code) | Exit::Graceful { code, .. }) = exit_requests.recv() => return code,
        }
    }
    0
}

async fn serve_udp(socket: UdpSocket, state: Arc<State>) {
    let local = socket.local_addr().map(|a| a.port()).unwrap_or_default();
    let ip = socket.local_addr().map(|a| a.ip());
    let address = match ip {
        Ok(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => String::new(),
    };
    go::log(format!("Started UDP server on port {address} {local}"));
    state.ready.store(true, Ordering::SeqCst);
    let mut buf = [0; 2048];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => return udp_failed(&state, "failed accepting UDP connections", &err).await,
        };
        let peer = http::client_addr(peer);
        let text = String::from_utf8_lossy(&buf[..n]).trim().to_lowercase();
        let reply = if text == "hostname" {
            go::log("Sending udp hostName response");
            go::hostname()
        } else if let Some(message) = text.strip_prefix("echo ") {
            go::log(format!("Echoing {message} to UDP client {peer}\n"));
            message.to_string()
        } else if text == "clientip" {
            go::log(format!("Sending clientip back to UDP client {peer}\n"));
            peer.to_string()
        } else {
            if !text.is_empty() {
                go::log(format!(
                    "Unknown UDP command received from {peer}: {text}\n"
                ));
            }
            continue;
        };
        if let Err(err) = socket.send_to(reply.as_bytes(), peer).await {
            let detail = format!("failed to write to UDP client {peer}");
            return udp_failed(&state, &detail, &err).await;
        }
    }
}

/// agnhost's `assertNoError` in the UDP server: log, mark not ready, end the process.
async fn udp_failed(state: &State, detail: &str, err: &std::io::Error) {
    go::log(format!("Error occurred: {detail}:{err}"));
    go::log("UDP server exited");
    state.ready.store(false, Ordering::SeqCst);
    // The receiver lives as long as the process serves.
    let _ = state.exits.send(Exit::Now(1)).await;
}

async fn handle(
    state: &State,
    request: Request<Incoming>,
    connection: &Connection,
) -> Response<Body> {
    let target: Uri = match &state.config.http_override {
        Some(path) => match path.parse() {
            Ok(uri) => uri,
            Err(err) => {
                return go::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("override request failed: {err}"),
                )
            }
        },
        None => request.uri().clone(),
    };
    let query = target.query();
    let value = |key: &str| go::form_value(query, key);
    match target.path() {
        "/clientip" => {
            go::log("GET /clientip");
            ok(connection.peer.to_string())
        }
        "/header" => header(&request, &value("key")),
        "/dial" => dial(query).await,
        "/echo" => echo(&value("msg"), &value("code")),
        "/exit" => exit(state, &value("code"), &value("timeout"), &value("wait")).await,
        "/healthz" => {
            go::log("GET /healthz");
            let status = if state.ready.load(Ordering::SeqCst) {
                StatusCode::OK
            } else {
                StatusCode::PRECONDITION_FAILED
            };
            go::response(status, Vec::new(), Bytes::new())
        }
        "/readyz" => {
            go::log("GET /readyz");
            if state.terminating.load(Ordering::SeqCst) {
                go::response(StatusCode::SERVICE_UNAVAILABLE, Vec::new(), "shutting down")
            } else if state.ready.load(Ordering::SeqCst) {
                ok("ok".to_string())
            } else {
                go::response(StatusCode::PRECONDITION_FAILED, Vec::new(), Bytes::new())
            }
        }
        "/hostname" => {
            go::log("GET /hostname");
            ok(go::hostname())
        }
        "/hostName" => {
            go::log("GET /hostName");
            ok(go::hostname())
        }
        "/redirect" => redirect(&request, &target, &value("location"), &value("code")),
        "/shell" => {
            let mut command = value("shellCommand");
            if command.is_empty() {
                command = value("cmd");
            }
            shell(command).await
        }
        "/shutdown" => {
            go::log("GET /shutdown");
            exit_now(state, 0).await
        }
        _ => {
            go::log("GET /");
            let now = go::time_string(Utc::now(), state.started.elapsed());
            ok(format!("NOW: {now}"))
        }
    }
}

fn ok(body: String) -> Response<Body> {
    go::response(StatusCode::OK, Vec::new(), body)
}

fn header(request: &Request<Incoming>, key: &str) -> Response<Body> {
    if !key.is_empty() {
        go::log(format!("GET /header?key={key}"));
        let value = request
            .headers()
            .get(key)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        return ok(value);
    }
    go::log("GET /header");
    let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in request.headers() {
        if name == header::HOST {
            continue;
        }
        all.entry(canonical_header(name.as_str()))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    ok(go::marshal(&all))
}

/// `textproto.CanonicalMIMEHeaderKey`: `x-forwarded-for` is `X-Forwarded-For`.
fn canonical_header(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let c = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            c
        })
        .collect()
}

fn echo(message: &str, code: &str) -> Response<Body> {
    go::log(format!("GET /echo?msg={message}&code={code}"));
    if code.is_empty() {
        return ok(message.to_string());
    }
    let Ok(code) = code.parse::<u16>() else {
        return ok(format!(
            "argument 'code' must be an integer or empty, got {code:?}\n"
        ));
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    go::response(status, Vec::new(), message.to_string())
}

async fn exit(state: &State, code: &str, timeout: &str, wait: &str) -> Response<Body> {
    go::log(format!(
        "GET /exit?code={code}&timeout={timeout}&wait={wait}"
    ));
    let timeout_nanos = match go::parse_duration(timeout) {
        Ok(nanos) => nanos,
        Err(_) if timeout.is_empty() => 0,
        Err(_) => {
            return ok(format!(
                "argument 'timeout' must be a valid golang duration or empty, got {timeout:?}\n"
            ))
        }
    };
    let wait_nanos = match go::parse_duration(wait) {
        Ok(nanos) => nanos,
        Err(_) if wait.is_empty() => 0,
        Err(_) => {
            return ok(format!(
                "argument 'wait' must be a valid golang duration or empty, got {wait:?}\n"
            ))
        }
    };
    let code = match code.parse::<i32>() {
        Ok(code) => code,
        Err(_) if code.is_empty() => 0,
        Err(_) => {
            return ok(format!(
                "argument 'code' must be an integer [0-127] or empty, got {code:?}\n"
            ))
        }
    };
    go::log(format!(
        "Will begin shutdown in {}, allowing {} for connections to close, then will exit with {code}",
        go::format_duration(wait_nanos),
        go::format_duration(timeout_nanos),
    ));
    tokio::time::sleep(nanos(wait_nanos)).await;
    if timeout_nanos == 0 {
        return exit_now(state, code).await;
    }
    let timeout = nanos(timeout_nanos);
    // The receiver lives as long as the process serves.
    let _ = state.exits.send(Exit::Graceful { code, timeout }).await;
    go::response(StatusCode::OK, Vec::new(), Bytes::new())
}

/// Ends the process before the request is answered, as `os.Exit` in a handler does.
async fn exit_now(state: &State, code: i32) -> Response<Body> {
    // The receiver lives as long as the process serves.
    let _ = state.exits.send(Exit::Now(code)).await;
    std::future::pending().await
}

fn nanos(nanos: i64) -> Duration {
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

fn redirect(
    request: &Request<Incoming>,
    target: &Uri,
    location: &str,
    code: &str,
) -> Response<Body> {
    go::log(format!(
        "{} /redirect?msg={location}&code={code}",
        request.method()
    ));
    let status = if code.is_empty() {
        StatusCode::FOUND
    } else {
        match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) => status,
            None => {
                return ok(format!(
                    "argument 'code' must be an integer or empty, got {code:?}\n"
                ))
            }
        }
    };
    // `http.Redirect` makes a relative location relative to the request's directory.
    let location = if location.starts_with('/') || location.contains("://") {
        location.to_string()
    } else {
        let path = target.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{location}")
    };
    let mut headers = vec![(header::LOCATION, location.clone())];
    let mut body = String::new();
    if matches!(*request.method(), hyper::Method::GET | hyper::Method::HEAD) {
        headers.push((header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()));
        let text = status.canonical_reason().unwrap_or_default();
        body = format!("<a href=\"{}\">{text}</a>.\n\n", go::html_escape(&location));
    }
    go::response(status, headers, body)
}

async fn shell(command: String) -> Response<Body> {
    go::log(format!("GET /shell?cmd={command}"));
    let (output, error) = tokio::task::spawn_blocking(move || combined_output(&command))
        .await
        .unwrap_or_else(|err| (Vec::new(), Some(err.to_string())));
    let mut result = BTreeMap::new();
    if !output.is_empty() {
        result.insert(
            "output".to_string(),
            String::from_utf8_lossy(&output).into_owned(),
        );
    }
    if let Some(error) = error {
        result.insert("error".to_string(), error);
    }
    let printed: Vec<String> = result.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    go::log(format!("Output: map[{}]", printed.join(" ")));
    ok(go::marshal(&result))
}

/// `exec.Command("/bin/sh", "-c", command).CombinedOutput()`: stdout and stderr through
/// one pipe, and the error Go reports (`exit status 1`).
fn combined_output(command: &str) -> (Vec<u8>, Option<String>) {
    let spawned = std::io::pipe().and_then(|(mut reader, writer)| {
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .spawn()?;
        let mut output = Vec::new();
        reader.read_to_end(&mut output)?;
        Ok((child, output))
    });
    let (mut child, output) = match spawned {
        Ok(spawned) => spawned,
        Err(err) => {
            return (
                Vec::new(),
                Some(format!("fork/exec /bin/sh: {}", go::errno_text(&err))),
            )
        }
    };
    let error = match child.wait() {
        Ok(status) => exit_error(status),
        Err(err) => Some(format!("wait: {}", go::errno_text(&err))),
    };
    (output, error)
}

/// `ProcessState.String()` for an unsuccessful exit.
fn exit_error(status: std::process::ExitStatus) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    if status.success() {
        return None;
    }
    if let Some(code) = status.code() {
        return Some(format!("exit status {code}"));
    }
    let signal = status.signal().unwrap_or_default();
    let name = match signal {
        1 => "hangup".to_string(),
        2 => "interrupt".to_string(),
        3 => "quit".to_string(),
        6 => "aborted".to_string(),
        9 => "killed".to_string(),
        11 => "segmentation fault".to_string(),
        13 => "broken pipe".to_string(),
        15 => "terminated".to_string(),
        other => format!("signal {other}"),
    };
    Some(format!("signal: {name}"))
}

async fn dial(query: Option<&str>) -> Response<Body> {
    let value = |key: &str| go::form_value(query, key);
    let (host, port, request, protocol, tries) = (
        value("host"),
        value("port"),
        value("request"),
        value("protocol"),
        value("tries"),
    );
    go::log(format!(
        "GET /dial?host={host}&protocol={protocol}&port={port}&request={request}&tries={tries}"
    ));
    let tries: i64 = if tries.is_empty() {
        1
    } else {
        match tries.parse() {
            Ok(tries) => tries,
            Err(_) => {
                return go::error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                    "tries parameter is invalid. strconv.Atoi: parsing {tries:?}: invalid syntax"
                ),
                )
            }
        }
    };
    if request.is_empty() {
        return go::error(
            StatusCode::BAD_REQUEST,
            "request parameter not specified. <nil>",
        );
    }
    let udp = match protocol.to_ascii_lowercase().as_str() {
        "" | "http" => false,
        "udp" => true,
        _ => {
            return go::error(
                StatusCode::BAD_REQUEST,
                &format!("unsupported protocol. {protocol}"),
            )
        }
    };
    let addr = match resolve(&host, &port, if udp { "udp" } else { "tcp" }).await {
        Ok(addr) => addr,
        Err(err) => {
            return go::error(
                StatusCode::BAD_REQUEST,
                &format!("host and/or port param are invalid. {err}"),
            )
        }
    };
    let mut responses = Vec::new();
    let mut errors = Vec::new();
    let mut last = String::new();
    for _ in 0..tries {
        let result = if udp {
            dial_udp(&request, addr).await
        } else {
            dial_http(&request, addr).await
        };
        match result {
            Ok(response) => {
                last = response.clone();
                responses.push(response);
            }
            Err(err) => {
                last.clear();
                errors.push(err);
            }
        }
    }
    let mut output = BTreeMap::new();
    if !last.is_empty() {
        output.insert("responses".to_string(), responses);
    }
    if !errors.is_empty() {
        output.insert("errors".to_string(), errors);
    }
    ok(go::marshal(&output))
}

/// `net.ResolveTCPAddr`/`ResolveUDPAddr` of `host:port`, preferring IPv4.
pub(crate) async fn resolve(host: &str, port: &str, network: &str) -> Result<SocketAddr, String> {
    let port: u16 = if port.is_empty() {
        0
    } else {
        port.parse()
            .map_err(|_| format!("lookup {network}/{port}: unknown port"))?
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| format!("lookup {host}: no such host"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("lookup {host}: no such host"))
}

/// One HTTP `GET http://addr/request`, the body on success.
async fn dial_http(request: &str, addr: SocketAddr) -> Result<String, String> {
    let url = format!("http://{addr}/{request}");
    let failed = |err: String| format!("Get {url:?}: {err}");
    let uri: Uri = url.parse().map_err(|err| format!("parse {url:?}: {err}"))?;
    let attempt = async {
        let stream = TcpStream::connect(addr).await.map_err(|err| {
            failed(format!(
                "dial tcp {addr}: connect: {}",
                go::errno_text(&err)
            ))
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| failed(err.to_string()))?;
        tokio::spawn(connection);
        let get = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, addr.to_string())
            .header(header::USER_AGENT, "Go-http-client/1.1")
            .body(Empty::<Bytes>::new())
            .map_err(|err| failed(err.to_string()))?;
        let response = sender
            .send_request(get)
            .await
            .map_err(|err| failed(err.to_string()))?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| failed(err.to_string()))?
            .to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    match tokio::time::timeout(DIAL_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(failed(
            "context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into(),
        )),
    }
}

/// One UDP datagram to `addr` and the first datagram back.
async fn dial_udp(request: &str, addr: SocketAddr) -> Result<String, String> {
    let any: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let dial_failed = |err: std::io::Error| {
        format!(
            "udp dial failed. err:dial udp {addr}: {}",
            go::errno_text(&err)
        )
    };
    let socket = UdpSocket::bind(any).await.map_err(dial_failed)?;
    socket.connect(addr).await.map_err(dial_failed)?;
    let local = socket.local_addr().map_err(dial_failed)?;
    socket.send(request.as_bytes()).await.map_err(|err| {
        format!(
            "udp connection write failed. err:write udp {local}->{addr}: write: {}",
            go::errno_text(&err)
        )
    })?;
    let mut buf = [0; 2048];
    let read_failed = |cause: String| {
        format!("reading from udp connection failed. err:'read udp {local}->{addr}: {cause}'")
    };
    match tokio::time::timeout(DIAL_TIMEOUT, socket.recv(&mut buf)).await {
        Err(_) => Err(read_failed("i/o timeout".into())),
        Ok(Err(err)) => Err(read_failed(format!("read: {}", go::errno_text(&err)))),
        Ok(Ok(0)) => Err("reading from udp connection failed. err:'<nil>'".into()),
        Ok(Ok(n)) => Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::task::JoinHandle;

    use super::*;
    use crate::workload::http::testing::{exchange, get};

    struct Netexec {
        http: SocketAddr,
        udp: SocketAddr,
        running: JoinHandle<i32>,
    }

    async fn start(config: Config) -> Netexec {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (http, udp) = (listener.local_addr().unwrap(), socket.local_addr().unwrap());
        let running = tokio::spawn(run(listener, vec![socket], config, std::future::pending()));
        Netexec { http, udp, running }
    }

    async fn udp_ask(server: SocketAddr, message: &str) -> (String, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(message.as_bytes(), server).await.unwrap();
        let mut buf = [0; 2048];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .expect("no UDP answer")
            .unwrap();
        (
            String::from_utf8_lossy(&buf[..n]).into_owned(),
            socket.local_addr().unwrap(),
        )
    }

    #[tokio::test]
    async fn http_endpoints() {
        let server = start(Config::default()).await;
        let hostname = go::hostname();
        assert!(!hostname.is_empty());

        let root = get(server.http, "/anything").await;
        assert_eq!(root.status(), 200);
        assert!(root.text().starts_with("NOW: 20"), "{}", root.text());
        assert!(root.text().contains(" +0000 UTC m=+"), "{}", root.text());
        assert_eq!(
            root.header("Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        let names: Vec<&str> = root.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Date", "Content-Length", "Content-Type"]);

        assert_eq!(get(server.http, "/hostname").await.text(), hostname);
        assert_eq!(get(server.http, "/hostName").await.text(), hostname);
        assert_eq!(
            get(server.http, "/echo?msg=hello+there%21").await.text(),
            "hello there!"
        );
        let teapot = get(server.http, "/echo?msg=brew&code=418").await;
        assert_eq!((teapot.status(), teapot.text().as_str()), (418, "brew"));
        assert_eq!(
            get(server.http, "/echo?msg=x&code=abc").await.text(),
            "argument 'code' must be an integer or empty, got \"abc\"\n"
        );

        let mut stream = TcpStream::connect(server.http).await.unwrap();
        let local = stream.local_addr().unwrap();
        let request = "GET /clientip HTTP/1.1\r\nHost: x\r\n\r\n";
        let clientip = exchange(&mut stream, request, false).await;
        assert_eq!(clientip.text(), local.to_string());

        let request = "GET /header?key=x-forwarded-for HTTP/1.1\r\nHost: x\r\n\
                       X-Forwarded-For: 1.2.3.4\r\n\r\n";
        assert_eq!(
            exchange(&mut stream, request, false).await.text(),
            "1.2.3.4"
        );
        let request = "GET /header HTTP/1.1\r\nHost: x\r\nx-custom: <a>\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            exchange(&mut stream, request, false).await.text(),
            r#"{"Accept":["*/*"],"X-Custom":["\u003ca\u003e"]}"#
        );

        // The UDP server is up, so the server is healthy and ready.
        let healthz = get(server.http, "/healthz").await;
        assert_eq!((healthz.status(), healthz.body.len()), (200, 0));
        assert_eq!(get(server.http, "/readyz").await.text(), "ok");

        let redirect = get(
            server.http,
            "/redirect?location=/echo%3Fmsg%3Dfoobar&code=307",
        )
        .await;
        assert_eq!(redirect.status(), 307);
        assert_eq!(redirect.header("Location"), Some("/echo?msg=foobar"));
        assert_eq!(
            redirect.text(),
            "<a href=\"/echo?msg=foobar\">Temporary Redirect</a>.\n\n"
        );
        assert_eq!(
            get(server.http, "/redirect?location=/x").await.status(),
            302
        );
        server.running.abort();
    }

    #[tokio::test]
    async fn shell_reports_output_and_errors() {
        let server = start(Config::default()).await;
        let both = get(server.http, "/shell?cmd=echo+out%3B+echo+err+%3E%262").await;
        assert_eq!(both.status(), 200);
        assert_eq!(both.text(), r#"{"output":"out\nerr\n"}"#);
        let failed = get(server.http, "/shell?shellCommand=exit+3").await;
        assert_eq!(failed.text(), r#"{"error":"exit status 3"}"#);
        let killed = get(server.http, "/shell?cmd=kill+-9+%24%24").await;
        assert_eq!(killed.text(), r#"{"error":"signal: killed"}"#);
        server.running.abort();
    }

    #[tokio::test]
    async fn udp_commands() {
        let server = start(Config::default()).await;
        assert_eq!(udp_ask(server.udp, "hostname\n").await.0, go::hostname());
        assert_eq!(
            udp_ask(server.udp, "  ECHO Hello World ").await.0,
            "hello world"
        );
        let (reply, client) = udp_ask(server.udp, "clientip").await;
        assert_eq!(reply, client.to_string());
        server.running.abort();
    }

    #[tokio::test]
    async fn dial_reaches_another_netexec() {
        let source = start(Config::default()).await;
        let target = start(Config::default()).await;
        let hostname = go::hostname();
        let path = format!(
            "/dial?request=hostname&protocol=http&host=127.0.0.1&port={}&tries=2",
            target.http.port()
        );
        let response = get(source.http, &path).await;
        assert_eq!(response.status(), 200);
        let expected = serde_json::json!({ "responses": [hostname, hostname] });
        assert_eq!(response.text(), expected.to_string());

        let path = format!(
            "/dial?request=echo%20hi&protocol=udp&host=localhost&port={}",
            target.udp.port()
        );
        assert_eq!(
            get(source.http, &path).await.text(),
            r#"{"responses":["hi"]}"#
        );

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let path = format!("/dial?request=hostname&host=127.0.0.1&port={closed_port}");
        let refused = get(source.http, &path).await;
        assert_eq!(
            refused.text(),
            format!(
                r#"{{"errors":["Get \"http://127.0.0.1:{closed_port}/hostname\": dial tcp 127.0.0.1:{closed_port}: connect: connection refused"]}}"#
            )
        );

        let missing = get(source.http, "/dial?host=127.0.0.1&port=1").await;
        assert_eq!(missing.status(), 400);
        assert_eq!(missing.text(), "request parameter not specified. <nil>\n");
        assert_eq!(missing.header("X-Content-Type-Options"), Some("nosniff"));
        let protocol = get(source.http, "/dial?request=x&host=h&port=1&protocol=ftp").await;
        assert_eq!(protocol.text(), "unsupported protocol. ftp\n");
        source.running.abort();
        target.running.abort();
    }

    #[tokio::test]
    async fn exit_ends_the_server_with_the_code() {
        let server = start(Config::default()).await;
        let mut stream = TcpStream::connect(server.http).await.unwrap();
        let request = "GET /exit?code=4&timeout=1s HTTP/1.1\r\nHost: x\r\n\r\n";
        let response = exchange(&mut stream, request, false).await;
        assert_eq!((response.status(), response.body.len()), (200, 0));
        assert_eq!(server.running.await.unwrap(), 4);

        let server = start(Config::default()).await;
        let immediate = tokio::spawn(get(server.http, "/exit?code=3"));
        assert_eq!(server.running.await.unwrap(), 3);
        immediate.abort();

        let server = start(Config::default()).await;
        let invalid = get(server.http, "/exit?code=x").await;
        assert_eq!(
            invalid.text(),
            "argument 'code' must be an integer [0-127] or empty, got \"x\"\n"
        );
        assert!(!server.running.is_finished());
        server.running.abort();
    }

    #[tokio::test]
    async fn without_udp_the_server_is_not_ready() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config {
            http_override: Some("/echo?msg=overridden".into()),
            ..Config::default()
        };
        let running = tokio::spawn(run(listener, Vec::new(), config, std::future::pending()));
        let response = get(addr, "/healthz").await;
        assert_eq!(response.text(), "overridden");
        running.abort();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let running = tokio::spawn(run(
            listener,
            Vec::new(),
            Config::default(),
            std::future::pending(),
        ));
        assert_eq!(get(addr, "/healthz").await.status(), 412);
        assert_eq!(get(addr, "/readyz").await.status(), 412);
        running.abort();
    }

    #[tokio::test]
    async fn sigterm_makes_readyz_fail_during_the_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (term, terminated) = tokio::sync::oneshot::channel::<()>();
        let config = Config {
            delay_shutdown: 30,
            ..Config::default()
        };
        let running = tokio::spawn(run(listener, vec![socket], config, async {
            let _ = terminated.await;
        }));
        assert_eq!(get(addr, "/readyz").await.text(), "ok");
        term.send(()).unwrap();
        let mut readyz = get(addr, "/readyz").await;
        for _ in 0..100 {
            if readyz.status() == 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            readyz = get(addr, "/readyz").await;
        }
        assert_eq!(
            (readyz.status(), readyz.text().as_str()),
            (503, "shutting down")
        );
        assert_eq!(get(addr, "/healthz").await.status(), 200);
        assert!(!running.is_finished());
        running.abort();
    }
}
