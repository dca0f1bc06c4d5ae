//! The subset of a Corefile that coredns-lite understands: one server block whose
//! `kubernetes` plugin names the cluster zones, `ttl`, `pods` and `fallthrough`, and a
//! `forward . <ip[:port]>`. Other plugins (`errors`, `health`, `ready`, `prometheus`,
//! `cache`, `loop`, `reload`, `loadbalance`, …) are accepted and have no effect here.

use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::Name;

/// The key of the ConfigMap `kube-system/coredns` that holds the Corefile.
pub const COREFILE_KEY: &str = "Corefile";

/// How `<dashed-ip>.<ns>.pod.<zone>` is answered (`pods` in the kubernetes plugin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodMode {
    /// NXDOMAIN for every pod name (CoreDNS's default).
    Disabled,
    /// Any well-formed dashed IP in an existing namespace gets its address back.
    Insecure,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The zones of the server block (`.` answers every name).
    pub server_zones: Vec<Name>,
    /// The zones the kubernetes plugin is authoritative for, lower case.
    pub zones: Vec<Name>,
    pub ttl: u32,
    pub pods: PodMode,
    /// Names under these zones that the plugin cannot answer go to the next plugin.
    pub fallthrough: Vec<Name>,
    /// Where `forward .` sends what the cluster zones do not cover.
    pub upstream: Option<SocketAddr>,
}

impl Default for Config {
    /// The Corefile kubeadm installs, without `forward` (kubesim sends no traffic off
    /// the cluster unless told to).
    fn default() -> Config {
        Config {
            server_zones: vec![Name::root()],
            zones: ["cluster.local.", "in-addr.arpa.", "ip6.arpa."]
                .iter()
                .map(|z| name(z))
                .collect(),
            ttl: 30,
            pods: PodMode::Insecure,
            fallthrough: ["in-addr.arpa.", "ip6.arpa."]
                .iter()
                .map(|z| name(z))
                .collect(),
            upstream: None,
        }
    }
}

impl Config {
    /// The default configuration for the cluster domain `zone`.
    pub fn for_zone(zone: &str) -> Result<Config, Error> {
        let mut config = Config::default();
        config.zones[0] = parse_zone(zone)?;
        Ok(config)
    }

    /// The first zone that is not a reverse zone: where PTR targets live.
    pub fn primary_zone(&self) -> Option<&Name> {
        self.zones.iter().find(|z| !is_reverse(z))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("Corefile:{line}: {message}")]
    Corefile { line: usize, message: String },
    #[error("invalid zone {0:?}")]
    Zone(String),
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).unwrap_or_else(|_| Name::root())
}

/// Whether `name` lies under `in-addr.arpa.` or `ip6.arpa.`.
pub(crate) fn is_reverse(zone: &Name) -> bool {
    let text = zone.to_ascii().to_ascii_lowercase();
    text.ends_with("in-addr.arpa.") || text.ends_with("ip6.arpa.")
}

/// A zone as a Corefile writes it (`cluster.local`, `cluster.local.`, `.:53`,
/// `dns://.:53`), lower case and fully qualified.
pub fn parse_zone(text: &str) -> Result<Name, Error> {
    let bare = text.strip_prefix("dns://").unwrap_or(text);
    let bare = match bare.rsplit_once(':') {
        Some((zone, port)) if port.chars().all(|c| c.is_ascii_digit()) => zone,
        _ => bare,
    };
    let bare = if bare.is_empty() { "." } else { bare };
    let mut zone = Name::from_ascii(bare).map_err(|_| Error::Zone(text.to_string()))?;
    zone.set_fqdn(true);
    Ok(zone.to_lowercase())
}

/// One directive: its words and the block that follows it, if any.
#[derive(Debug)]
struct Directive {
    line: usize,
    words: Vec<String>,
    block: Vec<Directive>,
}

/// Splits Corefile text into words per line, dropping comments.
fn tokens(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("");
        for word in line.split_whitespace() {
            let mut rest = word;
            while !rest.is_empty() {
                let brace = rest.find(['{', '}']);
                match brace {
                    Some(0) => {
                        out.push((i + 1, rest[..1].to_string()));
                        rest = &rest[1..];
                    }
                    Some(at) => {
                        out.push((i + 1, rest[..at].to_string()));
                        rest = &rest[at..];
                    }
                    None => {
                        out.push((i + 1, rest.to_string()));
                        rest = "";
                    }
                }
            }
        }
    }
    out
}

/// Parses directives until the closing brace of the enclosing block (or the end).
fn directives(
    toks: &[(usize, String)],
    at: &mut usize,
    nested: bool,
) -> Result<Vec<Directive>, Error> {
    let mut out: Vec<Directive> = Vec::new();
    let mut current: Option<Directive> = None;
    while *at < toks.len() {
        let (line, word) = &toks[*at];
        *at += 1;
        match word.as_str() {
            "{" => {
                let Some(mut d) = current.take() else {
                    return Err(Error::Corefile {
                        line: *line,
                        message: "unexpected '{'".into(),
                    });
                };
                d.block = directives(toks, at, true)?;
                out.push(d);
            }
            "}" => {
                if !nested {
                    return Err(Error::Corefile {
                        line: *line,
                        message: "unexpected '}'".into(),
                    });
                }
                out.extend(current.take());
                return Ok(out);
            }
            _ => match &mut current {
                Some(d) if d.line == *line => d.words.push(word.clone()),
                _ => {
                    out.extend(current.take());
                    current = Some(Directive {
                        line: *line,
                        words: vec![word.clone()],
                        block: Vec::new(),
                    });
                }
            },
        }
    }
    if nested {
        return Err(Error::Corefile {
            line: toks.last().map_or(0, |t| t.0),
            message: "unclosed '{'".into(),
        });
    }
    out.extend(current);
    Ok(out)
}

fn corefile_error(line: usize, message: impl Into<String>) -> Error {
    Error::Corefile {
        line,
        message: message.into(),
    }
}

/// Parses a Corefile. The first server block with a `kubernetes` plugin is used.
pub fn parse_corefile(text: &str) -> Result<Config, Error> {
    let toks = tokens(text);
    let mut at = 0;
    let blocks = directives(&toks, &mut at, false)?;
    let Some(block) = blocks
        .iter()
        .find(|b| b.block.iter().any(|d| d.words[0] == "kubernetes"))
    else {
        return Err(corefile_error(
            blocks.first().map_or(1, |b| b.line),
            "no server block with a kubernetes plugin",
        ));
    };
    let mut config = Config {
        server_zones: block
            .words
            .iter()
            .map(|w| parse_zone(w))
            .collect::<Result<_, _>>()?,
        fallthrough: Vec::new(),
        ..Config::default()
    };
    for directive in &block.block {
        match directive.words[0].as_str() {
            "kubernetes" => kubernetes(directive, &mut config)?,
            "forward" => config.upstream = forward(directive)?,
            other => tracing::debug!(plugin = other, "Corefile plugin has no effect here"),
        }
    }
    Ok(config)
}

fn kubernetes(directive: &Directive, config: &mut Config) -> Result<(), Error> {
    if directive.words.len() > 1 {
        config.zones = directive.words[1..]
            .iter()
            .map(|w| parse_zone(w))
            .collect::<Result<_, _>>()?;
    } else {
        config.zones = config.server_zones.clone();
    }
    for option in &directive.block {
        let args = &option.words[1..];
        match (option.words[0].as_str(), args) {
            ("pods", [mode]) => {
                config.pods = match mode.as_str() {
                    "disabled" => PodMode::Disabled,
                    "insecure" => PodMode::Insecure,
                    other => {
                        return Err(corefile_error(
                            option.line,
                            format!("pods {other}: only insecure and disabled are supported"),
                        ))
                    }
                }
            }
            ("ttl", [ttl]) => {
                config.ttl = ttl.parse().ok().filter(|t| *t <= 3600).ok_or_else(|| {
                    corefile_error(
                        option.line,
                        format!("ttl {ttl}: must be in range [0, 3600]"),
                    )
                })?;
            }
            ("fallthrough", []) => config.fallthrough = vec![Name::root()],
            ("fallthrough", zones) => {
                config.fallthrough = zones
                    .iter()
                    .map(|w| parse_zone(w))
                    .collect::<Result<_, _>>()?
            }
            (other, _) => {
                tracing::debug!(
                    option = other,
                    "kubernetes plugin option has no effect here"
                )
            }
        }
    }
    Ok(())
}

fn forward(directive: &Directive) -> Result<Option<SocketAddr>, Error> {
    let [_, from, to @ ..] = directive.words.as_slice() else {
        return Err(corefile_error(
            directive.line,
            "forward needs a zone and a destination",
        ));
    };
    if from != "." {
        return Err(corefile_error(
            directive.line,
            format!("forward {from}: only forward . is supported"),
        ));
    }
    for target in to {
        let bare = target.strip_prefix("dns://").unwrap_or(target);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Some(SocketAddr::new(ip, 53)));
        }
        if let Ok(addr) = bare.parse::<SocketAddr>() {
            return Ok(Some(addr));
        }
        tracing::warn!(
            target = %target,
            "forward destination ignored: only IP[:port] destinations are supported"
        );
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBEADM: &str = r#".:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
"#;

    #[test]
    fn kubeadm_corefile_is_the_default_without_forward() {
        assert_eq!(parse_corefile(KUBEADM), Ok(Config::default()));
    }

    #[test]
    fn zone_ttl_pods_and_forward() {
        let text = "cluster.local:53 {\n kubernetes example.org {\n  pods disabled\n  ttl 5\n }\n forward . 127.0.0.1:5353\n}\n";
        let config = parse_corefile(text).unwrap();
        assert_eq!(config.server_zones, vec![name("cluster.local.")]);
        assert_eq!(config.zones, vec![name("example.org.")]);
        assert_eq!(config.ttl, 5);
        assert_eq!(config.pods, PodMode::Disabled);
        assert!(config.fallthrough.is_empty());
        assert_eq!(config.upstream, Some("127.0.0.1:5353".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_line() {
        let text = ".:53 {\n kubernetes cluster.local {\n  pods verified\n }\n}\n";
        assert_eq!(
            parse_corefile(text),
            Err(Error::Corefile {
                line: 3,
                message: "pods verified: only insecure and disabled are supported".into()
            })
        );
        assert!(parse_corefile(".:53 {\n errors\n").is_err());
        assert!(parse_corefile(".:53 {\n errors\n}\n").is_err());
    }
}
