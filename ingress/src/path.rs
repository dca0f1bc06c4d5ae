//! Ingress paths and how a request path matches them, by the Kubernetes Ingress
//! specification. `Exact` compares whole paths, case-sensitively. `Prefix` compares
//! `/`-separated elements: `/foo` matches `/foo`, `/foo/` and `/foo/bar` but not
//! `/foobar`, and a trailing slash on either side is ignored. Among matching paths the
//! longest wins, and `Exact` wins over `Prefix` of the same length.
//!
//! `ImplementationSpecific` is matched as `Prefix`. (ingress-nginx compares it as an
//! nginx string prefix, so there `/foo` also matches `/foobar`; kubesim keeps the
//! element-wise reading the specification gives `Prefix`, so one path means one set of
//! requests whatever its type.)

use std::fmt;

/// How a path matches, after `ImplementationSpecific` has been read as `Prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathType {
    Exact,
    Prefix,
}

impl PathType {
    /// The `pathType` of an Ingress path; `ImplementationSpecific`, a missing type and
    /// anything else are `Prefix`.
    pub fn from_spec(path_type: &str) -> PathType {
        match path_type {
            "Exact" => PathType::Exact,
            _ => PathType::Prefix,
        }
    }
}

/// One path of an Ingress rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathRule {
    pub kind: PathType,
    /// As written for `Exact`; for `Prefix` without trailing slashes (`/` stays `/`),
    /// since `/foo/` and `/foo` match the same requests.
    pub path: String,
}

impl PathRule {
    pub fn new(kind: PathType, path: &str) -> PathRule {
        let path = match kind {
            PathType::Exact => path.to_string(),
            PathType::Prefix => {
                let trimmed = path.trim_end_matches('/');
                if trimmed.is_empty() {
                    "/".to_string()
                } else {
                    trimmed.to_string()
                }
            }
        };
        PathRule { kind, path }
    }

    /// Whether `request` (a normalized path, see [`normalize`]) matches.
    pub fn matches(&self, request: &str) -> bool {
        match self.kind {
            PathType::Exact => request == self.path,
            PathType::Prefix => {
                let mut wanted = elements(&self.path);
                let mut given = elements(request);
                loop {
                    match (wanted.next(), given.next()) {
                        (None, _) => return true,
                        (Some(w), Some(g)) if w == g => {}
                        _ => return false,
                    }
                }
            }
        }
    }

    /// Orders matching paths: the longer first, then `Exact` before `Prefix`.
    fn precedence(&self) -> (usize, bool) {
        (self.path.len(), self.kind == PathType::Exact)
    }
}

impl fmt::Display for PathRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.path, self.kind)
    }
}

fn elements(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|e| !e.is_empty())
}

/// The item of `candidates` whose path matches `request` with the highest precedence;
/// among equals, the first.
pub fn best<'a, T>(
    candidates: impl IntoIterator<Item = (&'a PathRule, T)>,
    request: &str,
) -> Option<T> {
    let mut best: Option<((usize, bool), T)> = None;
    for (rule, item) in candidates {
        if !rule.matches(request) {
            continue;
        }
        let rank = rule.precedence();
        if best.as_ref().is_none_or(|(r, _)| rank > *r) {
            best = Some((rank, item));
        }
    }
    best.map(|(_, item)| item)
}

/// The path nginx matches locations against: percent-decoded, repeated slashes merged,
/// `.` and `..` segments resolved (never above the root).
pub fn normalize(raw: &str) -> String {
    let decoded = percent_decode(raw);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let trailing = decoded.ends_with('/')
        || decoded.ends_with("/.")
        || decoded.ends_with("/..")
        || decoded == "."
        || decoded == "..";
    let mut path = String::with_capacity(decoded.len() + 1);
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if trailing || segments.is_empty() {
        path.push('/');
    }
    path
}

/// `%XX` escapes decoded; a path whose decoding is not UTF-8 is kept as it came.
fn percent_decode(raw: &str) -> String {
    if !raw.contains('%') {
        return raw.to_string();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(kind: PathType, rule: &str, request: &str, expected: bool) {
        assert_eq!(
            PathRule::new(kind, rule).matches(request),
            expected,
            "{kind:?} {rule} against {request}"
        );
    }

    #[test]
    fn prefix_matches_whole_elements() {
        use PathType::*;
        check(Prefix, "/foo", "/foo", true);
        check(Prefix, "/foo", "/foo/", true);
        check(Prefix, "/foo", "/foo/bar", true);
        check(Prefix, "/foo", "/foobar", false);
        check(Prefix, "/foo/bar", "/foo", false);
        check(Prefix, "/", "/anything/at/all", true);
        check(Prefix, "/", "/", true);
        check(Prefix, "/Foo", "/foo", false);
        check(Exact, "/foo", "/foo", true);
        check(Exact, "/foo", "/Foo", false);
        check(Exact, "/", "/", true);
        check(Exact, "/", "/a", false);
    }

    #[test]
    fn implementation_specific_reads_as_prefix() {
        assert_eq!(
            PathType::from_spec("ImplementationSpecific"),
            PathType::Prefix
        );
        assert_eq!(PathType::from_spec("Prefix"), PathType::Prefix);
        assert_eq!(PathType::from_spec("Exact"), PathType::Exact);
    }

    #[test]
    fn longest_path_wins_then_exact() {
        let rules = [
            PathRule::new(PathType::Prefix, "/"),
            PathRule::new(PathType::Prefix, "/aaa"),
            PathRule::new(PathType::Prefix, "/aaa/bbb/"),
            PathRule::new(PathType::Exact, "/aaa/bbb"),
        ];
        let pick = |request| best(rules.iter().map(|r| (r, r.to_string())), request);
        assert_eq!(pick("/aaa/bbb").as_deref(), Some("/aaa/bbb (Exact)"));
        assert_eq!(pick("/aaa/bbb/ccc").as_deref(), Some("/aaa/bbb (Prefix)"));
        assert_eq!(pick("/aaa/ccc").as_deref(), Some("/aaa (Prefix)"));
        assert_eq!(pick("/ccc").as_deref(), Some("/ (Prefix)"));
        assert_eq!(best(rules[1..].iter().map(|r| (r, ())), "/ccc"), None);
    }

    #[test]
    fn request_paths_normalize_as_nginx_does() {
        for (raw, normalized) in [
            ("/", "/"),
            ("", "/"),
            ("/foo", "/foo"),
            ("/foo/", "/foo/"),
            ("//foo///bar", "/foo/bar"),
            ("/foo/./bar", "/foo/bar"),
            ("/foo/../bar", "/bar"),
            ("/../../etc", "/etc"),
            ("/foo/..", "/"),
            ("/a/b/.", "/a/b/"),
            ("/%66oo/b%61r", "/foo/bar"),
            ("/a%2Fb", "/a/b"),
            ("/100%", "/100%"),
            ("/%ff", "/%ff"),
        ] {
            assert_eq!(normalize(raw), normalized, "{raw}");
        }
    }
}
