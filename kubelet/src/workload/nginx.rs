//! The `nginx` image's default server: the stock welcome page at `/` and `/index.html`,
//! nginx's own error pages elsewhere, the response headers nginx sends for a static
//! file, and one access-log line per request on stdout in the image's `main` log format
//! (what `kubectl logs` shows for an nginx pod).
//!
//! The page and error pages follow the version: the welcome page changed in 1.21.2 and
//! 1.29.6, error pages lost `bgcolor="white"` in 1.15.4.

use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::ext::ReasonPhrase;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use super::flags::{self, Kind};
use super::http::{self, Body, Connection};

/// The version served when the image's tag names none (`nginx`, `nginx:latest`,
/// `nginx:alpine`): a recent stable release.
pub const DEFAULT_VERSION: &str = "1.27.3";

/// The modification time of `index.html` in the image, for `Last-Modified` and `ETag`
/// (2024-11-26 15:55:00 UTC, when 1.27.3 was packaged).
const INDEX_MTIME: i64 = 1_732_636_500;

/// The welcome page up to 1.21.1.
const WELCOME_1_0: &str = r#"<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
    body {
        width: 35em;
        margin: 0 auto;
        font-family: Tahoma, Verdana, Arial, sans-serif;
    }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"#;

/// The welcome page from 1.21.2 (dark mode) to 1.29.5.
const WELCOME_1_21_2: &str = r#"<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>

<p>For online documentation and support please refer to
<a href="http://nginx.org/">nginx.org</a>.<br/>
Commercial support is available at
<a href="http://nginx.com/">nginx.com</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
"#;

/// The welcome page from 1.29.6 (two lines end in a space, as in nginx's source).
const WELCOME_1_29_6: &str = "<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
<style>
html { color-scheme: light dark; }
body { width: 35em; margin: 0 auto;
font-family: Tahoma, Verdana, Arial, sans-serif; }
</style>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, nginx is successfully installed and working.
Further configuration is required for the web server, reverse proxy, 
API gateway, load balancer, content cache, or other features.</p>

<p>For online documentation and support please refer to
<a href=\"https://nginx.org/\">nginx.org</a>.<br/>
To engage with the community please visit
<a href=\"https://community.nginx.org/\">community.nginx.org</a>.<br/>
For enterprise grade support, professional services, additional 
security features and capabilities please refer to
<a href=\"https://f5.com/nginx\">f5.com/nginx</a>.</p>

<p><em>Thank you for using nginx.</em></p>
</body>
</html>
";

/// What one nginx version serves.
#[derive(Debug)]
struct Site {
    version: String,
    welcome: &'static str,
    etag: String,
    last_modified: String,
    /// Error pages carry `<body bgcolor="white">` before 1.15.4.
    white_error_pages: bool,
}

impl Site {
    fn new(version: &str) -> Site {
        let release = parse_version(version);
        let welcome = if release >= (1, 29, 6) {
            WELCOME_1_29_6
        } else if release >= (1, 21, 2) {
            WELCOME_1_21_2
        } else {
            WELCOME_1_0
        };
        let mtime = DateTime::from_timestamp(INDEX_MTIME, 0).unwrap_or_default();
        Site {
            version: version.to_string(),
            welcome,
            etag: format!("\"{:x}-{:x}\"", INDEX_MTIME, welcome.len()),
            last_modified: http::http_date(mtime),
            white_error_pages: release < (1, 15, 4),
        }
    }

    fn error_page(&self, status: StatusCode) -> String {
        let title = format!(
            "{} {}",
            status.as_u16(),
            match status {
                StatusCode::METHOD_NOT_ALLOWED => "Not Allowed",
                other => other.canonical_reason().unwrap_or(""),
            }
        );
        let body = if self.white_error_pages {
            "<body bgcolor=\"white\">"
        } else {
            "<body>"
        };
        format!(
            "<html>\r\n<head><title>{title}</title></head>\r\n{body}\r\n\
             <center><h1>{title}</h1></center>\r\n\
             <hr><center>nginx/{}</center>\r\n</body>\r\n</html>\r\n",
            self.version
        )
    }
}

/// `1.25.3` as `(1, 25, 3)`; missing or unreadable parts count as 0.
fn parse_version(version: &str) -> (u32, u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// Serves nginx `version`'s default site on port `port` of every address until the
/// process ends.
pub async fn serve(port: u16, version: &str) -> io::Result<()> {
    let listener = http::bind_tcp(port).await?;
    serve_listener(listener, version, std::future::pending()).await;
    Ok(())
}

/// Serves on `listener` until `shutdown` completes.
async fn serve_listener(
    listener: TcpListener,
    version: &str,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let site = Arc::new(Site::new(version));
    let handler = move |request: Request<Incoming>, connection: Arc<Connection>| {
        let site = site.clone();
        async move { handle(&site, &request, &connection) }
    };
    http::serve(listener, handler, shutdown).await;
}

/// `kubesim workload nginx [--port N] [--version V]`: the image's start-up lines, then
/// serving until SIGTERM, SIGINT or SIGQUIT.
pub(crate) async fn main(args: &[String]) -> i32 {
    let spec = [("port", Kind::Value), ("version", Kind::Value)];
    let parsed = flags::parse(args, &spec).and_then(|flags| {
        let port = flags.int("port", 80)?;
        Ok((port, flags.string("version", DEFAULT_VERSION)))
    });
    let (port, version) = match parsed {
        Ok((port, version)) => match u16::try_from(port) {
            Ok(port) => (port, version),
            Err(_) => {
                eprintln!("nginx: invalid port {port}");
                return 1;
            }
        },
        Err(err) => {
            eprintln!("nginx: {err}");
            return 1;
        }
    };
    let pid = std::process::id();
    let listener = match http::bind_tcp(port).await {
        Ok(listener) => listener,
        Err(err) => {
            error_log("emerg", &format!("bind() to 0.0.0.0:{port} failed ({err})"));
            return 1;
        }
    };
    println!("/docker-entrypoint.sh: Configuration complete; ready for start up");
    error_log("notice", "using the \"epoll\" event method");
    error_log("notice", &format!("nginx/{version}"));
    error_log("notice", "start worker processes");
    error_log("notice", &format!("start worker process {pid}"));
    let stop = async {
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            return std::future::pending().await;
        };
        let name = tokio::select! {
            _ = term.recv() => "15 (SIGTERM)",
            _ = int.recv() => "2 (SIGINT)",
            _ = quit.recv() => "3 (SIGQUIT)",
        };
        error_log("notice", &format!("signal {name} received, exiting"));
    };
    serve_listener(listener, &version, stop).await;
    error_log("notice", "exit");
    0
}

/// A line of nginx's error log (stderr in the image).
fn error_log(level: &str, message: &str) {
    let pid = std::process::id();
    let now = Utc::now().format("%Y/%m/%d %H:%M:%S");
    eprintln!("{now} [{level}] {pid}#{pid}: {message}");
}

fn handle(site: &Site, request: &Request<Incoming>, connection: &Connection) -> Response<Body> {
    let now = Utc::now();
    let method = request.method();
    let page = match normalize_path(request.uri().path()).as_deref() {
        Some("/" | "/index.html") => Some(site.welcome),
        _ => None,
    };
    let status = match (method, page) {
        (&Method::GET | &Method::HEAD | &Method::POST, None) => StatusCode::NOT_FOUND,
        (&Method::GET | &Method::HEAD, Some(_)) if not_modified(site, request) => {
            StatusCode::NOT_MODIFIED
        }
        (&Method::GET | &Method::HEAD, Some(_)) => StatusCode::OK,
        _ => StatusCode::METHOD_NOT_ALLOWED,
    };
    let body = match status {
        StatusCode::OK => page.unwrap_or_default().to_string(),
        StatusCode::NOT_MODIFIED => String::new(),
        other => site.error_page(other),
    };
    if status == StatusCode::NOT_FOUND {
        let file = request.uri().path().trim_start_matches('/');
        error_log(
            "error",
            &format!(
                "*{} open() \"/usr/share/nginx/html/{file}\" failed (2: No such file or \
                 directory), client: {}, server: localhost, request: \"{}\", host: \"{}\"",
                connection.id,
                connection.peer.ip(),
                request_line(request),
                header_text(request, header::HOST).unwrap_or_default(),
            ),
        );
    }
    let sent = if method == Method::HEAD {
        0
    } else {
        body.len()
    };
    let line = access_line(request, connection.peer.ip(), now, status, sent);
    if let Err(err) = writeln!(io::stdout().lock(), "{line}") {
        tracing::debug!(?err, "access log line lost");
    }

    let mut response = Response::builder()
        .status(status)
        .header(header::SERVER, format!("nginx/{}", site.version))
        .header(header::DATE, http::http_date(now));
    if status != StatusCode::NOT_MODIFIED {
        response = response
            .header(header::CONTENT_TYPE, "text/html")
            .header(header::CONTENT_LENGTH, body.len());
    }
    if matches!(status, StatusCode::OK | StatusCode::NOT_MODIFIED) {
        response = response.header(header::LAST_MODIFIED, site.last_modified.as_str());
    }
    response = response.header(header::CONNECTION, keep_alive(request));
    if matches!(status, StatusCode::OK | StatusCode::NOT_MODIFIED) {
        response = response.header(header::ETAG, site.etag.as_str());
    }
    if status == StatusCode::OK {
        response = response.header(header::ACCEPT_RANGES, "bytes");
    }
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response = response.extension(ReasonPhrase::from_static(b"Not Allowed"));
    }
    response
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::default()))
}

/// The request path as nginx matches it: percent-decoded, slashes merged, `.` and `..`
/// resolved; `None` when it escapes the root or does not decode.
fn normalize_path(path: &str) -> Option<String> {
    let mut decoded = Vec::with_capacity(path.len());
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            decoded.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(decoded).ok()?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop()?;
            }
            other => segments.push(other),
        }
    }
    let trailing = decoded.ends_with('/') && !segments.is_empty();
    let mut normalized = format!("/{}", segments.join("/"));
    if trailing {
        normalized.push('/');
    }
    Some(normalized)
}

/// Whether a conditional GET matches the page (nginx's `if_modified_since exact`).
fn not_modified(site: &Site, request: &Request<Incoming>) -> bool {
    if let Some(tags) = header_text(request, header::IF_NONE_MATCH) {
        return tags.split(',').map(str::trim).any(|tag| {
            tag == "*" || tag == site.etag || tag.strip_prefix("W/") == Some(&site.etag)
        });
    }
    header_text(request, header::IF_MODIFIED_SINCE).as_deref() == Some(&site.last_modified)
}

/// The `Connection` header nginx answers with.
fn keep_alive(request: &Request<Incoming>) -> &'static str {
    let connection = header_text(request, header::CONNECTION)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let keep = match request.version() {
        Version::HTTP_10 => connection.contains("keep-alive"),
        _ => !connection.contains("close"),
    };
    if keep {
        "keep-alive"
    } else {
        "close"
    }
}

fn header_text<B>(request: &Request<B>, name: header::HeaderName) -> Option<String> {
    request
        .headers()
        .get(name)
        .map(|value: &HeaderValue| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

fn request_line<B>(request: &Request<B>) -> String {
    format!(
        "{} {} {:?}",
        request.method(),
        request.uri(),
        request.version()
    )
}

/// One line in the image's `main` format: `combined` plus `"$http_x_forwarded_for"`.
fn access_line<B>(
    request: &Request<B>,
    client: IpAddr,
    now: DateTime<Utc>,
    status: StatusCode,
    sent: usize,
) -> String {
    let field = |name| escape(&header_text(request, name).unwrap_or_else(|| "-".into()));
    format!(
        "{client} - - [{}] \"{}\" {} {sent} \"{}\" \"{}\" \"{}\"",
        now.format("%d/%b/%Y:%H:%M:%S %z"),
        escape(&request_line(request)),
        status.as_u16(),
        field(header::REFERER),
        field(header::USER_AGENT),
        field(header::HeaderName::from_static("x-forwarded-for")),
    )
}

/// nginx's default log escaping: `"`, `\`, control and non-ASCII bytes as `\xHH`.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte == b'"' || byte == b'\\' || !(0x20..0x7f).contains(&byte) {
            escaped.push_str(&format!("\\x{byte:02X}"));
        } else {
            escaped.push(char::from(byte));
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::net::TcpStream;

    use super::super::http::testing::{exchange, get};
    use super::*;

    async fn start(version: &str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let version = version.to_string();
        tokio::spawn(async move {
            serve_listener(listener, &version, std::future::pending()).await;
        });
        addr
    }

    #[test]
    fn pages_follow_the_version() {
        assert_eq!(WELCOME_1_0.len(), 612);
        assert_eq!(WELCOME_1_21_2.len(), 615);
        assert_eq!(WELCOME_1_29_6.len(), 896);
        assert_eq!(Site::new("1.14.2").welcome, WELCOME_1_0);
        assert_eq!(Site::new("1.21.1").welcome, WELCOME_1_0);
        assert_eq!(Site::new("1.21.2").welcome, WELCOME_1_21_2);
        assert_eq!(Site::new("1.25").welcome, WELCOME_1_21_2);
        assert_eq!(Site::new(DEFAULT_VERSION).welcome, WELCOME_1_21_2);
        assert_eq!(Site::new("1.29.6").welcome, WELCOME_1_29_6);
        assert_eq!(
            Site::new("1.14.2").error_page(StatusCode::NOT_FOUND),
            "<html>\r\n<head><title>404 Not Found</title></head>\r\n\
             <body bgcolor=\"white\">\r\n<center><h1>404 Not Found</h1></center>\r\n\
             <hr><center>nginx/1.14.2</center>\r\n</body>\r\n</html>\r\n"
        );
        assert_eq!(
            Site::new("1.27.3").error_page(StatusCode::NOT_FOUND).len(),
            153
        );
    }

    #[test]
    fn paths_normalize_like_nginx() {
        assert_eq!(normalize_path("/").as_deref(), Some("/"));
        assert_eq!(
            normalize_path("//index.html").as_deref(),
            Some("/index.html")
        );
        assert_eq!(
            normalize_path("/a/../index%2Ehtml").as_deref(),
            Some("/index.html")
        );
        assert_eq!(normalize_path("/./").as_deref(), Some("/"));
        assert_eq!(
            normalize_path("/index.html/").as_deref(),
            Some("/index.html/")
        );
        assert_eq!(normalize_path("/.."), None);
        assert_eq!(normalize_path("/%zz"), None);
        assert_eq!(
            escape("curl/8 \"x\"\\é"),
            "curl/8 \\x22x\\x22\\x5C\\xC3\\xA9"
        );
    }

    #[test]
    fn access_lines_use_the_image_log_format() {
        let now = DateTime::from_timestamp(1_795_514_400, 0).unwrap();
        let request = Request::get("/index.html?a=1")
            .header(header::USER_AGENT, "curl/7.88.1")
            .body(())
            .unwrap();
        assert_eq!(
            access_line(&request, [10, 244, 1, 3].into(), now, StatusCode::OK, 615),
            "10.244.1.3 - - [24/Nov/2026:10:00:00 +0000] \"GET /index.html?a=1 HTTP/1.1\" \
             200 615 \"-\" \"curl/7.88.1\" \"-\""
        );
        let request = Request::head("/x")
            .version(Version::HTTP_10)
            .header(header::REFERER, "http://a/\"b\"")
            .header("x-forwarded-for", "1.2.3.4")
            .body(())
            .unwrap();
        assert_eq!(
            access_line(
                &request,
                [127, 0, 0, 1].into(),
                now,
                StatusCode::NOT_FOUND,
                0
            ),
            "127.0.0.1 - - [24/Nov/2026:10:00:00 +0000] \"HEAD /x HTTP/1.0\" 404 0 \
             \"http://a/\\x22b\\x22\" \"-\" \"1.2.3.4\""
        );
    }

    #[tokio::test]
    async fn welcome_page_with_nginx_headers() {
        let addr = start("1.27.3").await;
        for path in ["/", "/index.html", "/?x=1"] {
            let response = get(addr, path).await;
            assert_eq!(response.status_line, "HTTP/1.1 200 OK");
            assert_eq!(response.text(), WELCOME_1_21_2);
            let names: Vec<&str> = response.headers.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                names,
                [
                    "Server",
                    "Date",
                    "Content-Type",
                    "Content-Length",
                    "Last-Modified",
                    "Connection",
                    "Etag",
                    "Accept-Ranges"
                ]
            );
            assert_eq!(response.header("Server"), Some("nginx/1.27.3"));
            assert_eq!(response.header("Content-Type"), Some("text/html"));
            assert_eq!(response.header("Content-Length"), Some("615"));
            assert_eq!(response.header("Connection"), Some("keep-alive"));
            assert_eq!(response.header("Etag"), Some("\"6745ef54-267\""));
            assert_eq!(
                response.header("Last-Modified"),
                Some("Tue, 26 Nov 2024 15:55:00 GMT")
            );
            assert_eq!(response.header("Accept-Ranges"), Some("bytes"));
            let date = response.header("Date").unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc2822(&date.replace("GMT", "+0000")).is_ok(),
                "{date}"
            );
        }
    }

    #[tokio::test]
    async fn old_versions_serve_the_old_page() {
        let addr = start("1.14.2").await;
        let response = get(addr, "/").await;
        assert_eq!(response.text(), WELCOME_1_0);
        assert_eq!(response.header("Server"), Some("nginx/1.14.2"));
        assert_eq!(response.header("Content-Length"), Some("612"));
    }

    #[tokio::test]
    async fn head_keep_alive_and_not_found() {
        let addr = start("1.27.3").await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = exchange(&mut stream, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n", true).await;
        assert_eq!(head.status(), 200);
        assert_eq!(head.header("Content-Length"), Some("615"));
        assert!(head.body.is_empty());

        // The same connection serves the next request: keep-alive is real.
        let missing = exchange(
            &mut stream,
            "GET /nope.html HTTP/1.1\r\nHost: x\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(missing.status_line, "HTTP/1.1 404 Not Found");
        assert_eq!(
            missing.text(),
            "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
             <center><h1>404 Not Found</h1></center>\r\n\
             <hr><center>nginx/1.27.3</center>\r\n</body>\r\n</html>\r\n"
        );
        assert_eq!(missing.header("Server"), Some("nginx/1.27.3"));
        assert_eq!(missing.header("Content-Type"), Some("text/html"));
        assert_eq!(missing.header("Etag"), None);

        let head_missing = exchange(
            &mut stream,
            "HEAD /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            true,
        )
        .await;
        assert_eq!(head_missing.status(), 404);
        assert_eq!(head_missing.header("Content-Length"), Some("153"));
        assert_eq!(head_missing.header("Connection"), Some("close"));
    }

    #[tokio::test]
    async fn methods_and_conditional_requests() {
        let addr = start("1.27.3").await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let post = exchange(
            &mut stream,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
            false,
        )
        .await;
        assert_eq!(post.status_line, "HTTP/1.1 405 Not Allowed");
        assert!(post.text().contains("<title>405 Not Allowed</title>"));

        let cached = exchange(
            &mut stream,
            "GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"6745ef54-267\"\r\n\r\n",
            true,
        )
        .await;
        assert_eq!(cached.status(), 304);
        assert_eq!(cached.header("Etag"), Some("\"6745ef54-267\""));

        let stale = exchange(
            &mut stream,
            "GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"other\"\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(stale.status(), 200);
        assert_eq!(stale.body.len(), 615);
    }
}
