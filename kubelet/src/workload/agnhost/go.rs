//! What agnhost's output owes to Go: the `log` package's line prefix, `time.Duration`
//! parsing and printing, `time.Time`'s `String`, `encoding/json`'s escaping, `net/http`'s
//! response headers and content sniffing, `url.ParseQuery`, and syscall error texts.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{self, HeaderName};
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::workload::http::{http_date, Body};

/// A line of Go's standard logger (stderr, `2006/01/02 15:04:05 message`).
pub(crate) fn log(message: impl AsRef<str>) {
    let now = Utc::now().format("%Y/%m/%d %H:%M:%S");
    let message = message.as_ref();
    eprintln!("{now} {}", message.strip_suffix('\n').unwrap_or(message));
}

/// The host name, as `os.Hostname()` reads it (the pod's UTS namespace).
pub(crate) fn hostname() -> String {
    match nix::unistd::gethostname() {
        Ok(name) => name.to_string_lossy().into_owned(),
        Err(err) => {
            log(format!("Error occurred: failed to get hostname:{err}"));
            String::new()
        }
    }
}

/// The text Go gives a syscall error (`connection refused`), else the error's own.
pub(crate) fn errno_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => {
            let desc = nix::errno::Errno::from_raw(code).desc();
            let mut chars = desc.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => desc.to_string(),
            }
        }
        None => err.to_string(),
    }
}

/// Parses a Go duration (`300ms`, `1.5h`, `2h45m`, `-1s`, `0`) into nanoseconds.
pub(crate) fn parse_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let whole: i128 = match digits {
            0 => 0,
            n => rest[..n].parse().map_err(|_| invalid())?,
        };
        rest = &rest[digits..];
        let mut fraction = (0i128, 1i128);
        let mut fraction_digits = 0;
        if let Some(after_dot) = rest.strip_prefix('.') {
            fraction_digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            for digit in after_dot[..fraction_digits].bytes().take(18) {
                fraction = (fraction.0 * 10 + i128::from(digit - b'0'), fraction.1 * 10);
            }
            rest = &after_dot[fraction_digits..];
        }
        if digits == 0 && fraction_digits == 0 {
            return Err(invalid());
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: i128 = match &rest[..unit_len] {
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => return Err(format!("time: unknown unit {other:?} in duration {text:?}")),
        };
        rest = &rest[unit_len..];
        total += whole * unit + fraction.0 * unit / fraction.1;
        if total > i128::from(i64::MAX) {
            return Err(invalid());
        }
    }
    let total = i64::try_from(total).map_err(|_| invalid())?;
    Ok(if negative { -total } else { total })
}

/// A duration as Go's `Duration.String` prints it (`1m30s`, `500ms`, `0s`).
pub(crate) fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let value = u128::from(nanos.unsigned_abs());
    let split = |value: u128, precision: u32| {
        let scale = 10u128.pow(precision);
        let part = value % scale;
        let fraction = if part == 0 {
            String::new()
        } else {
            let digits = format!(".{part:0width$}", width = precision as usize);
            digits.trim_end_matches('0').to_string()
        };
        (fraction, value / scale)
    };
    if value < 1_000_000_000 {
        let ((fraction, whole), unit) = match value {
            0..1_000 => return format!("{sign}{value}ns"),
            1_000..1_000_000 => (split(value, 3), "µs"),
            _ => (split(value, 6), "ms"),
        };
        return format!("{sign}{whole}{fraction}{unit}");
    }
    let (fraction, seconds) = split(value, 9);
    let (minutes, seconds) = (seconds / 60, seconds % 60);
    let (hours, minutes) = (minutes / 60, minutes % 60);
    if hours > 0 {
        format!("{sign}{hours}h{minutes}m{seconds}{fraction}s")
    } else if minutes > 0 {
        format!("{sign}{minutes}m{seconds}{fraction}s")
    } else {
        format!("{sign}{seconds}{fraction}s")
    }
}

/// `time.Now()` printed with `%v` in a UTC container: wall clock, zone and the monotonic
/// reading (`2026-11-24 10:00:00.5 +0000 UTC m=+3.000000001`).
pub(crate) fn time_string(now: DateTime<Utc>, since_start: Duration) -> String {
    let nanos = now.timestamp_subsec_nanos();
    let fraction = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{}{fraction} +0000 UTC m=+{}.{:09}",
        now.format("%Y-%m-%d %H:%M:%S"),
        since_start.as_secs(),
        since_start.subsec_nanos()
    )
}

/// `json.Marshal` of a map: keys sorted, and `<`, `>`, `&`, U+2028, U+2029 escaped.
pub(crate) fn marshal<V: Serialize>(map: &BTreeMap<String, V>) -> String {
    let json = serde_json::to_string(map).unwrap_or_default();
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The `Content-Type` `net/http` sniffs for a body (`http.DetectContentType`, for the
/// text kinds agnhost writes).
fn sniff(body: &[u8]) -> &'static str {
    const HTML: [&str; 17] = [
        "<!DOCTYPE HTML",
        "<HTML",
        "<HEAD",
        "<SCRIPT",
        "<IFRAME",
        "<H1",
        "<DIV",
        "<FONT",
        "<TABLE",
        "<A",
        "<STYLE",
        "<TITLE",
        "<B",
        "<BODY",
        "<BR",
        "<P",
        "<!--",
    ];
    let data = &body[..body.len().min(512)];
    let start = data
        .iter()
        .position(|b| !b"\t\n\x0c\r ".contains(b))
        .unwrap_or(data.len());
    let trimmed = &data[start..];
    let html = HTML.iter().any(|signature| {
        let signature = signature.as_bytes();
        trimmed.len() > signature.len()
            && trimmed[..signature.len()].eq_ignore_ascii_case(signature)
            && matches!(trimmed[signature.len()], b' ' | b'>')
    });
    if html {
        "text/html; charset=utf-8"
    } else if trimmed.starts_with(b"<?xml") {
        "text/xml; charset=utf-8"
    } else if data
        .iter()
        .any(|&b| matches!(b, 0x00..=0x08 | 0x0b | 0x0e..=0x1a | 0x1c..=0x1f))
    {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// A response as `net/http` writes it: the handler's headers (sorted), then `Date`,
/// `Content-Length`, and a sniffed `Content-Type` when the handler set none.
pub(crate) fn response(
    status: StatusCode,
    mut headers: Vec<(HeaderName, String)>,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let body = body.into();
    headers.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let typed = headers.iter().any(|(name, _)| name == header::CONTENT_TYPE);
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder = builder
        .header(header::DATE, http_date(Utc::now()))
        .header(header::CONTENT_LENGTH, body.len());
    if !typed && !body.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, sniff(&body));
    }
    builder
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::default()))
}

/// `http.Error`: a plain-text message and a newline.
pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    response(
        status,
        vec![
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        format!("{message}\n"),
    )
}

/// The first value of `key` in a query string, as `Request.FormValue` finds it (pairs
/// with `;` or bad escapes are skipped, `+` is a space); empty when absent.
pub(crate) fn form_value(query: Option<&str>, key: &str) -> String {
    for pair in query.unwrap_or_default().split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if let (Some(name), Some(value)) = (unescape(name), unescape(value)) {
            if name == key {
                return value;
            }
        }
    }
    String::new()
}

/// `url.QueryUnescape`.
fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// `html.EscapeString`'s replacements, as `http.Redirect` uses them.
pub(crate) fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("1s"), Ok(1_000_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_duration("2µs"), Ok(2_000));
        assert_eq!(parse_duration(".5h"), Ok(1_800_000_000_000));
        assert_eq!(parse_duration("-2s"), Ok(-2_000_000_000));
        assert_eq!(
            parse_duration("1"),
            Err("time: missing unit in duration \"1\"".into())
        );
        assert_eq!(
            parse_duration(""),
            Err("time: invalid duration \"\"".into())
        );
        assert_eq!(
            parse_duration("x"),
            Err("time: invalid duration \"x\"".into())
        );
        assert_eq!(
            parse_duration("3d"),
            Err("time: unknown unit \"d\" in duration \"3d\"".into())
        );
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(999), "999ns");
        assert_eq!(format_duration(1_500), "1.5µs");
        assert_eq!(format_duration(500_000_000), "500ms");
        assert_eq!(format_duration(1_500_000_000), "1.5s");
        assert_eq!(format_duration(90_000_000_000), "1m30s");
        assert_eq!(format_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(format_duration(-1_000_000_000), "-1s");
    }

    #[test]
    fn times_print_like_go() {
        let now = DateTime::from_timestamp(1_795_514_400, 500_000_000).unwrap();
        assert_eq!(
            time_string(now, Duration::new(3, 1)),
            "2026-11-24 10:00:00.5 +0000 UTC m=+3.000000001"
        );
        let whole = DateTime::from_timestamp(1_795_514_400, 0).unwrap();
        assert_eq!(
            time_string(whole, Duration::ZERO),
            "2026-11-24 10:00:00 +0000 UTC m=+0.000000000"
        );
    }

    #[test]
    fn json_escapes_like_go() {
        let map = BTreeMap::from([
            ("responses".to_string(), vec!["<h1>a&b</h1>".to_string()]),
            ("errors".to_string(), vec!["x\u{2028}".to_string()]),
        ]);
        assert_eq!(
            marshal(&map),
            r#"{"errors":["x\u2028"],"responses":["\u003ch1\u003ea\u0026b\u003c/h1\u003e"]}"#
        );
    }

    #[test]
    fn query_values_and_sniffing() {
        let query = Some("a=1&msg=hello+world%21&msg=second&bad=%zz&x;y=2");
        assert_eq!(form_value(query, "msg"), "hello world!");
        assert_eq!(form_value(query, "bad"), "");
        assert_eq!(form_value(query, "y"), "");
        assert_eq!(form_value(None, "msg"), "");
        assert_eq!(sniff(b"NOW: 2026"), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"  <html><body>"), "text/html; charset=utf-8");
        assert_eq!(sniff(b"<?xml version"), "text/xml; charset=utf-8");
        assert_eq!(sniff(b"\x00\x01"), "application/octet-stream");
        assert_eq!(html_escape("/a?b=\"<&>'"), "/a?b=&#34;&lt;&amp;&gt;&#39;");
    }
}
