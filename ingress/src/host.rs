//! Host names as Ingress rules match them: exact names, and wildcards `*.foo.com`
//! that match exactly one more DNS label (`bar.foo.com`, not `foo.com` nor
//! `baz.bar.foo.com`). Names compare case-insensitively.

use std::collections::HashMap;

/// Values by host pattern: exact names and `*.` wildcards.
#[derive(Debug, Clone)]
pub struct HostMap<T> {
    exact: HashMap<String, T>,
    /// By the suffix after `*.`.
    wildcard: HashMap<String, T>,
}

impl<T> Default for HostMap<T> {
    fn default() -> HostMap<T> {
        HostMap {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T> HostMap<T> {
    fn slot(&mut self, pattern: &str) -> (&mut HashMap<String, T>, String) {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix.to_string()),
            None => (&mut self.exact, pattern),
        }
    }

    /// The value of `pattern` (a rule's host), made by `make` if it has none yet.
    pub fn get_or_insert_with(&mut self, pattern: &str, make: impl FnOnce() -> T) -> &mut T {
        let (map, key) = self.slot(pattern);
        map.entry(key).or_insert_with(make)
    }

    /// The value for a request's `host`: its exact name, else the wildcard covering it.
    pub fn get(&self, host: &str) -> Option<&T> {
        let host = host.to_ascii_lowercase();
        if let Some(value) = self.exact.get(&host) {
            return Some(value);
        }
        let (label, parent) = host.split_once('.')?;
        if label.is_empty() || parent.is_empty() {
            return None;
        }
        self.wildcard.get(parent)
    }

    /// The value of exactly this pattern (no wildcard matching), to change it.
    pub fn get_pattern_mut(&mut self, pattern: &str) -> Option<&mut T> {
        let (map, key) = self.slot(pattern);
        map.get_mut(&key)
    }

    pub(crate) fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }
}

/// The host of a request from its `Host` header (or the URI's authority): without
/// the port and a trailing dot, lower case.
pub fn request_host(authority: &str) -> String {
    let host = if authority.starts_with('[') {
        // An IPv6 literal keeps its brackets.
        authority
            .find(']')
            .map_or(authority, |end| &authority[..=end])
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_exactly_one_label() {
        let mut map = HostMap::default();
        *map.get_or_insert_with("*.foo.com", || 0) = 1;
        *map.get_or_insert_with("Exact.Foo.com", || 0) = 2;
        for (host, expected) in [
            ("bar.foo.com", Some(1)),
            ("BAR.foo.COM", Some(1)),
            ("baz.bar.foo.com", None),
            ("foo.com", None),
            (".foo.com", None),
            ("exact.foo.com", Some(2)),
            ("other.com", None),
        ] {
            assert_eq!(map.get(host).copied(), expected, "{host}");
        }
        assert_eq!(map.get_pattern_mut("*.FOO.com").copied(), Some(1));
        assert_eq!(map.get_pattern_mut("bar.foo.com"), None);
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn hosts_lose_port_and_trailing_dot() {
        for (authority, host) in [
            ("foo.bar.com", "foo.bar.com"),
            ("Foo.Bar.com:8080", "foo.bar.com"),
            ("foo.bar.com.", "foo.bar.com"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]:443", "[::1]"),
            ("[::1]", "[::1]"),
        ] {
            assert_eq!(request_host(authority), host, "{authority}");
        }
    }
}
