//! The responses the controller makes itself, with nginx's bodies (as ingress-nginx
//! serves them, `server_tokens off`): 404 from the built-in default backend, 503 for a
//! backend without endpoints, 502 and 504 for failed upstreams, 413 for a body over
//! the limit, and 308 to HTTPS.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION, SERVER};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::proxy::Body;

/// The `Server` header nginx sends without its version.
pub const SERVER_NAME: &str = "nginx";

/// nginx's reason phrase of `status` in its pages.
fn title(status: StatusCode) -> String {
    let reason = match status {
        StatusCode::SERVICE_UNAVAILABLE => "Service Temporarily Unavailable",
        StatusCode::GATEWAY_TIMEOUT => "Gateway Time-out",
        StatusCode::PAYLOAD_TOO_LARGE => "Request Entity Too Large",
        other => other.canonical_reason().unwrap_or(""),
    };
    format!("{} {reason}", status.as_u16())
}

/// nginx's page for `status`.
pub fn body(status: StatusCode) -> String {
    let title = title(status);
    format!(
        "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n\
         <center><h1>{title}</h1></center>\r\n\
         <hr><center>{SERVER_NAME}</center>\r\n</body>\r\n</html>\r\n"
    )
}

/// A response with nginx's page for `status`.
pub fn error(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body(status)))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
    headers.insert(SERVER, HeaderValue::from_static(SERVER_NAME));
    response
}

/// ingress-nginx's `ssl-redirect`: 308 to the same host and URI over HTTPS.
pub fn redirect_to_https(host: &str, request_uri: &str) -> Response<Body> {
    let mut response = error(StatusCode::PERMANENT_REDIRECT);
    if let Ok(location) = HeaderValue::from_str(&format!("https://{host}{request_uri}")) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_nginx_pages() {
        assert_eq!(
            body(StatusCode::NOT_FOUND),
            "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
             <center><h1>404 Not Found</h1></center>\r\n\
             <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
        );
        for (status, title) in [
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Temporarily Unavailable",
            ),
            (StatusCode::BAD_GATEWAY, "502 Bad Gateway"),
            (StatusCode::GATEWAY_TIMEOUT, "504 Gateway Time-out"),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "413 Request Entity Too Large",
            ),
            (StatusCode::PERMANENT_REDIRECT, "308 Permanent Redirect"),
        ] {
            let page = body(status);
            assert!(
                page.contains(&format!("<head><title>{title}</title></head>"))
                    && page.contains(&format!("<center><h1>{title}</h1></center>")),
                "{page}"
            );
        }
    }

    #[test]
    fn responses_carry_status_type_server_and_location() {
        let response = error(StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/html");
        assert_eq!(response.headers()[SERVER], "nginx");
        let redirect = redirect_to_https("secure.example.com", "/a/b?c=d");
        assert_eq!(redirect.status(), 308);
        assert_eq!(
            redirect.headers()[LOCATION],
            "https://secure.example.com/a/b?c=d"
        );
    }
}
