//! Container probes as the kubelet runs them: HTTP GET and TCP from the node to the
//! pod's address, exec inside the pod's namespaces; the result of one attempt.

use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The probe's User-Agent, as the kubelet sends it.
const USER_AGENT: &str = "kube-probe/1.33";

/// Which of a container's probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// The timing of a probe, with the API's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default))
        };
        let count = |v: Option<i32>, default: u32| {
            v.and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Resolves a probe's port: a number, or the name of one of the container's ports.
pub fn port(container: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => match name.parse::<u16>() {
            Ok(n) => Some(n),
            Err(_) => container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok()),
        },
    }
}

/// Runs the probe once; `Err` carries why it failed, as the kubelet's event says.
pub async fn attempt(
    probe: &Probe,
    container: &Container,
    pod_ip: IpAddr,
    binary: &Path,
    sandbox: i32,
) -> Result<(), String> {
    let timeout = Timing::of(probe).timeout;
    let run = async {
        if let Some(http) = &probe.http_get {
            let port = port(container, &http.port)
                .ok_or_else(|| format!("invalid port {:?}", http.port))?;
            let host = match http.host.as_deref().filter(|h| !h.is_empty()) {
                Some(h) => h.parse().map_err(|_| format!("invalid host {h}"))?,
                None => pod_ip,
            };
            if http.scheme.as_deref() == Some("HTTPS") {
                return Err("HTTPS probes are not supported by kubesim".to_owned());
            }
            let headers: Vec<(String, String)> = http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            http_get(host, port, http.path.as_deref().unwrap_or("/"), &headers).await
        } else if let Some(tcp) = &probe.tcp_socket {
            let port =
                port(container, &tcp.port).ok_or_else(|| format!("invalid port {:?}", tcp.port))?;
            TcpStream::connect((pod_ip, port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {pod_ip}:{port}: connect: {e}"))
        } else if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            let status = tokio::process::Command::new(binary)
                .arg("nsenter")
                .arg("--target")
                .arg(sandbox.to_string())
                .arg("--")
                .args(&command)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .map_err(|e| e.to_string())?;
            match status.code() {
                Some(0) => Ok(()),
                code => Err(format!(
                    "command {command:?} exited with {}",
                    code.map_or("a signal".to_owned(), |c| c.to_string())
                )),
            }
        } else {
            Err("probe has no handler kubesim supports".to_owned())
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(format!("probe timed out after {}s", timeout.as_secs())),
    }
}

/// One HTTP/1.1 GET; 200 to 399 is success, as for the kubelet.
async fn http_get(
    host: IpAddr,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let url = format!("http://{host}:{port}{path}");
    let mut stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get \"{url}\": dial tcp {host}:{port}: connect: {e}"))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
    {
        request.push_str(&format!("User-Agent: {USER_AGENT}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Accept: */*\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]).await {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(format!("Get \"{url}\": {e}")),
        }
        if head[..read].contains(&b'\n') {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get \"{url}\": malformed HTTP response {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ContainerPort;

    use super::*;

    #[test]
    fn timing_defaults_are_the_apis() {
        let t = Timing::of(&Probe::default());
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!((t.success_threshold, t.failure_threshold), (1, 3));
    }

    #[test]
    fn named_ports_resolve_against_the_container() {
        let c = Container {
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(port(&c, &IntOrString::String("http".into())), Some(8080));
        assert_eq!(port(&c, &IntOrString::String("9090".into())), Some(9090));
        assert_eq!(port(&c, &IntOrString::Int(80)), Some(80));
        assert_eq!(port(&c, &IntOrString::String("nope".into())), None);
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_and_3xx_and_fail_otherwise() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            for status in ["200 OK", "302 Found", "500 Internal Server Error"] {
                let (mut conn, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let n = conn.read(&mut buf).await.expect("read");
                assert!(String::from_utf8_lossy(&buf[..n]).contains("User-Agent: kube-probe/"));
                conn.write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes())
                    .await
                    .expect("write");
            }
        });
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        assert_eq!(http_get(ip, port, "/healthz", &[]).await, Ok(()));
        assert_eq!(http_get(ip, port, "/", &[]).await, Ok(()));
        assert_eq!(
            http_get(ip, port, "/", &[]).await,
            Err("HTTP probe failed with statuscode: 500".to_owned())
        );
        server.await.expect("server");
    }
}
