//! `agnhost connect <host:port>`: one TCP connection (or UDP exchange) attempt, exiting 0
//! on success and 1 with agnhost's prefixed reason (`UNKNOWN`, `TIMEOUT`, `DNS`,
//! `REFUSED`, `OTHER`) on stderr otherwise, as `test/images/agnhost/connect` does.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpStream, UdpSocket};

use super::go;
use crate::workload::flags::Kind;

const FLAGS: &[(&str, Kind)] = &[
    ("timeout", Kind::Value),
    ("protocol", Kind::Value),
    ("udp-data", Kind::Value),
    ("sctp-data", Kind::Value),
];

/// `agnhost connect [flags] host:port`.
pub(crate) async fn main(args: &[String]) -> i32 {
    let flags = match super::parse_flags("connect", args, FLAGS) {
        Ok(flags) => flags,
        Err(code) => return code,
    };
    let [dest] = flags.positional.as_slice() else {
        let received = flags.positional.len();
        let message = format!("accepts 1 arg(s), received {received}");
        return super::usage_error("connect", &message);
    };
    let timeout = match flags.get("timeout").map(go::parse_duration) {
        None => None,
        Some(Ok(nanos)) => u64::try_from(nanos)
            .ok()
            .filter(|&n| n > 0)
            .map(Duration::from_nanos),
        Some(Err(reason)) => {
            let err = crate::workload::flags::Error::Invalid {
                name: "timeout".into(),
                value: flags.get("timeout").unwrap_or_default().into(),
                reason,
            };
            return super::flag_error("connect", &err);
        }
    };
    let outcome = match flags.string("protocol", "tcp").as_str() {
        "" | "tcp" => connect_tcp(dest, timeout).await,
        "udp" => connect_udp(dest, timeout, &flags.string("udp-data", "hostname")).await,
        "sctp" => Err("OTHER: kubesim has no SCTP".to_string()),
        other => Err(format!("Unsupported protocol\n{other}")),
    };
    match outcome {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("{message}");
            1
        }
    }
}

/// Splits `host:port` as `net.SplitHostPort` does.
fn split_host_port(dest: &str) -> Result<(&str, &str), String> {
    let missing = || format!("address {dest}: missing port in address");
    if let Some(bracketed) = dest.strip_prefix('[') {
        let (host, rest) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("address {dest}: missing ']' in address"))?;
        let port = rest.strip_prefix(':').ok_or_else(missing)?;
        return Ok((host, port));
    }
    let (host, port) = dest.rsplit_once(':').ok_or_else(missing)?;
    if host.contains(':') {
        return Err(format!("address {dest}: too many colons in address"));
    }
    Ok((host, port))
}

async fn resolve_all(dest: &str, network: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = split_host_port(dest).map_err(|err| format!("UNKNOWN: {err}"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("DNS: lookup {network}/{port}: unknown port"))?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| format!("DNS: lookup {host}: no such host"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("DNS: lookup {host}: no such host"));
    }
    Ok(addrs)
}

async fn connect_tcp(dest: &str, timeout: Option<Duration>) -> Result<(), String> {
    let addrs = resolve_all(dest, "tcp").await?;
    let attempt = async {
        let mut last = None;
        for addr in &addrs {
            match TcpStream::connect(addr).await {
                Ok(_) => return Ok(()),
                Err(err) => last = Some((*addr, err)),
            }
        }
        Err(last)
    };
    let result = match timeout {
        Some(timeout) => tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| "TIMEOUT".to_string())?,
        None => attempt.await,
    };
    match result {
        Ok(()) => Ok(()),
        Err(Some((_, err))) if err.kind() == io::ErrorKind::TimedOut => Err("TIMEOUT".to_string()),
        Err(Some((_, err))) if err.kind() == io::ErrorKind::ConnectionRefused => {
            Err("REFUSED".to_string())
        }
        Err(Some((addr, err))) => Err(format!(
            "OTHER: dial tcp {addr}: connect: {}",
            go::errno_text(&err)
        )),
        Err(None) => Err(format!("OTHER: dial tcp {dest}: no address")),
    }
}

async fn connect_udp(dest: &str, timeout: Option<Duration>, data: &str) -> Result<(), String> {
    let addrs = resolve_all(dest, "udp").await?;
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .copied()
        .unwrap_or(addrs[0]);
    let any: SocketAddr = if addr.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let other = |err: io::Error| format!("OTHER: dial udp {addr}: {}", go::errno_text(&err));
    let socket = UdpSocket::bind(any).await.map_err(other)?;
    socket.connect(addr).await.map_err(other)?;
    let local = socket.local_addr().map_err(other)?;
    let classify = |op: &str, err: Option<io::Error>| match err {
        None => format!("TIMEOUT: {op} udp {local}->{addr}: i/o timeout"),
        Some(err) if err.kind() == io::ErrorKind::ConnectionRefused => format!(
            "REFUSED: {op} udp {local}->{addr}: {op}: {}",
            go::errno_text(&err)
        ),
        Some(err) => format!(
            "UNKNOWN: {op} udp {local}->{addr}: {op}: {}",
            go::errno_text(&err)
        ),
    };
    let exchange = async {
        socket
            .send(format!("{data}\n").as_bytes())
            .await
            .map_err(|err| classify("write", Some(err)))?;
        let mut buf = [0; 1024];
        socket
            .recv(&mut buf)
            .await
            .map_err(|err| classify("read", Some(err)))
    };
    let received = match timeout {
        Some(timeout) => tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| classify("read", None))??,
        None => exchange.await?,
    };
    if received == 0 {
        return Err(
            "OTHER: No data received from the server. Cannot guarantee the server \
                    received the request."
                .to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| a.to_string()).collect()
    }

    async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn tcp_success_and_failures() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        assert_eq!(main(&args(&[&open])).await, 0);
        assert_eq!(main(&args(&["--timeout=2s", &open])).await, 0);

        let closed = format!("127.0.0.1:{}", closed_port().await);
        assert_eq!(main(&args(&[&closed])).await, 1);
        assert_eq!(connect_tcp(&closed, None).await, Err("REFUSED".into()));
        assert_eq!(
            connect_tcp("127.0.0.1", None).await,
            Err("UNKNOWN: address 127.0.0.1: missing port in address".into())
        );
        assert_eq!(
            connect_tcp("no-such-host.invalid:80", None).await,
            Err("DNS: lookup no-such-host.invalid: no such host".into())
        );
    }

    #[tokio::test]
    async fn udp_needs_an_answer() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let answering = tokio::spawn(async move {
            let mut buf = [0; 64];
            let (n, peer) = server.recv_from(&mut buf).await.unwrap();
            server.send_to(b"name", peer).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let dest = addr.to_string();
        assert_eq!(
            connect_udp(&dest, Some(Duration::from_secs(5)), "hostname").await,
            Ok(())
        );
        assert_eq!(answering.await.unwrap(), "hostname\n");

        let closed = format!("127.0.0.1:{}", closed_port().await);
        let refused = connect_udp(&closed, Some(Duration::from_secs(5)), "hostname").await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.starts_with("REFUSED: read udp 127.0.0.1:")
                    && e.ends_with(": read: connection refused")),
            "{refused:?}"
        );
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dest = silent.local_addr().unwrap().to_string();
        let timeout = connect_udp(&dest, Some(Duration::from_millis(100)), "x").await;
        assert!(
            timeout
                .as_ref()
                .is_err_and(|e| e.starts_with("TIMEOUT: read udp")),
            "{timeout:?}"
        );
    }

    #[tokio::test]
    async fn usage_errors_exit_zero_like_agnhost() {
        assert_eq!(main(&[]).await, 0);
        assert_eq!(main(&args(&["--timeout=soon", "127.0.0.1:1"])).await, 0);
        assert_eq!(main(&args(&["--protocol=ftp", "127.0.0.1:1"])).await, 1);
    }
}
