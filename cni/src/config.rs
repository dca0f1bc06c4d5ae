//! The plugin's inputs: the `CNI_*` environment variables and the network configuration
//! read from stdin (SPEC.md, "Parameters" and "Network configuration format").

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The CNI versions this plugin speaks.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Where leases live when the configuration does not say.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// The operation the runtime asks for (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    fn parse(value: &str) -> Result<Self> {
        Ok(match value {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "VERSION" => Self::Version,
            "GC" => Self::Gc,
            "STATUS" => Self::Status,
            other => {
                return Err(Error::InvalidEnv {
                    name: "CNI_COMMAND",
                    reason: format!("unknown command {other:?}"),
                })
            }
        })
    }
}

/// The `CNI_*` variables, checked against what the command needs.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: String,
}

impl Env {
    /// Reads the variables from a lookup function (the process environment in `main`).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let command = Command::parse(&lookup("CNI_COMMAND").ok_or(Error::InvalidEnv {
            name: "CNI_COMMAND",
            reason: "missing".into(),
        })?)?;
        let per_attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let required = |name: &'static str, needed: bool| -> Result<String> {
            match lookup(name).filter(|v| !v.is_empty()) {
                Some(value) => Ok(value),
                None if needed => Err(Error::InvalidEnv {
                    name,
                    reason: "missing".into(),
                }),
                None => Ok(String::new()),
            }
        };
        let container_id = required("CNI_CONTAINERID", per_attachment)?;
        if !container_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(Error::InvalidEnv {
                name: "CNI_CONTAINERID",
                reason: "only letters, digits, '_', '.' and '-' are allowed".into(),
            });
        }
        let ifname = required("CNI_IFNAME", per_attachment)?;
        if ifname.len() > 15 || ifname.contains(['/', ' ', ':']) || ifname == "." || ifname == ".."
        {
            return Err(Error::InvalidEnv {
                name: "CNI_IFNAME",
                reason: format!("{ifname:?} is not a valid interface name"),
            });
        }
        let netns = required(
            "CNI_NETNS",
            matches!(command, Command::Add | Command::Check),
        )?;
        Ok(Self {
            command,
            container_id,
            netns: (!netns.is_empty()).then(|| PathBuf::from(netns)),
            ifname,
            args: lookup("CNI_ARGS").unwrap_or_default(),
        })
    }
}

/// One attachment the runtime still uses (`cni.dev/valid-attachments` of GC).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Hash)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The built-in host-local style IPAM section.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(rename = "type")]
    pub kind: String,
    pub subnet: String,
    pub gateway: Option<Ipv4Addr>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    bridge: Option<String>,
    is_gateway: Option<bool>,
    #[serde(default)]
    hairpin_mode: bool,
    mtu: Option<u32>,
    ipam: Option<IpamConf>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    valid_attachments: Vec<Attachment>,
}

/// An IPv4 subnet: the network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n`; host bits must be zero and at least two hosts must fit.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |why: &str| Error::InvalidConfig(format!("subnet {text:?}: {why}"));
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| invalid("expected a.b.c.d/n"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid("bad address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid("bad prefix length"))?;
        if !(1..=30).contains(&prefix) {
            return Err(invalid("prefix length must be between 1 and 30"));
        }
        let subnet = Self {
            network: addr,
            prefix,
        };
        if u32::from(addr) & !subnet.mask() != 0 {
            return Err(invalid("host bits are set"));
        }
        Ok(subnet)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// The first usable address (`.1` in a /24).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The last usable address (the one before broadcast).
    pub fn last_host(&self) -> Ipv4Addr {
        Ipv4Addr::from((u32::from(self.network) | !self.mask()) - 1)
    }

    /// Whether `ip` is a usable host address of the subnet.
    pub fn contains_host(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.first_host())..=u32::from(self.last_host())).contains(&u32::from(ip))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The checked network configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub bridge: String,
    /// Whether the bridge gets the gateway address; true unless set to false (the
    /// reference bridge plugin defaults to false), since the node routes for its pods.
    pub is_gateway: bool,
    pub hairpin_mode: bool,
    pub mtu: Option<u32>,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    pub data_dir: PathBuf,
    pub valid_attachments: Vec<Attachment>,
}

/// Reads only `cniVersion`, for VERSION and for error replies; falls back to the newest.
pub fn peek_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1].to_owned())
}

impl NetConf {
    /// Parses and checks the configuration: 6 when it is not JSON, 7 when it is not a
    /// valid configuration, 1 when the version is not one we speak.
    pub fn parse(stdin: &[u8]) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_slice(stdin).map_err(|e| Error::Decode(e.to_string()))?;
        let raw: RawConf =
            serde_json::from_value(value).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        if !SUPPORTED_VERSIONS.contains(&raw.cni_version.as_str()) {
            return Err(Error::IncompatibleVersion(raw.cni_version));
        }
        if raw.name.is_empty() || raw.name.contains('/') {
            return Err(Error::InvalidConfig(format!(
                "network name {:?} is not valid",
                raw.name
            )));
        }
        if raw.kind.is_empty() {
            return Err(Error::InvalidConfig("type is empty".into()));
        }
        let bridge = raw.bridge.unwrap_or_else(|| "cni0".into());
        if bridge.is_empty() || bridge.len() > 15 {
            return Err(Error::InvalidConfig(format!(
                "bridge name {bridge:?} must be 1 to 15 characters"
            )));
        }
        let ipam = raw
            .ipam
            .ok_or_else(|| Error::InvalidConfig("ipam is missing".into()))?;
        if ipam.kind != "host-local" {
            return Err(Error::InvalidConfig(format!(
                "ipam type {:?} is not supported, only the built-in \"host-local\"",
                ipam.kind
            )));
        }
        let subnet = Subnet::parse(&ipam.subnet)?;
        let gateway = ipam.gateway.unwrap_or_else(|| subnet.first_host());
        if !subnet.contains_host(gateway) {
            return Err(Error::InvalidConfig(format!(
                "gateway {gateway} is not in {subnet}"
            )));
        }
        Ok(Self {
            cni_version: raw.cni_version,
            name: raw.name,
            bridge,
            is_gateway: raw.is_gateway.unwrap_or(true),
            hairpin_mode: raw.hairpin_mode,
            mtu: raw.mtu,
            subnet,
            gateway,
            data_dir: ipam.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            valid_attachments: raw.valid_attachments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"{"cniVersion":"1.1.0","name":"kubesim","type":"kubesim",
        "hairpinMode":true,"mtu":1450,
        "ipam":{"type":"host-local","subnet":"10.244.1.0/24","dataDir":"/tmp/x"}}"#;

    #[test]
    fn parses_a_full_configuration_with_defaults() {
        let conf = NetConf::parse(CONF.as_bytes()).expect("valid");
        assert_eq!(conf.bridge, "cni0");
        assert!(conf.is_gateway);
        assert!(conf.hairpin_mode);
        assert_eq!(conf.mtu, Some(1450));
        assert_eq!(conf.subnet.to_string(), "10.244.1.0/24");
        assert_eq!(conf.gateway, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(conf.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn decode_invalid_and_version_errors_have_their_codes() {
        let code = |text: &str| {
            NetConf::parse(text.as_bytes())
                .map(|_| ())
                .unwrap_err()
                .code()
        };
        assert_eq!(code("{not json"), 6);
        assert_eq!(code(r#"{"cniVersion":"1.1.0"}"#), 7);
        assert_eq!(code(&CONF.replace("10.244.1.0/24", "10.244.1.5/24")), 7);
        assert_eq!(code(&CONF.replace("host-local", "dhcp")), 7);
        assert_eq!(code(&CONF.replace("1.1.0", "2.0.0")), 1);
    }

    #[test]
    fn subnet_hosts() {
        let subnet = Subnet::parse("10.244.1.0/24").expect("valid");
        assert_eq!(subnet.first_host(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(subnet.last_host(), Ipv4Addr::new(10, 244, 1, 254));
        assert!(!subnet.contains_host(Ipv4Addr::new(10, 244, 1, 255)));
        assert!(Subnet::parse("10.244.1.0").is_err());
        assert!(Subnet::parse("10.244.1.0/31").is_err());
    }

    #[test]
    fn env_requires_what_the_command_needs() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let err = Env::from_lookup(vars(&[])).unwrap_err();
        assert_eq!(err.code(), 4);
        let err = Env::from_lookup(vars(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1")]))
            .unwrap_err();
        assert_eq!(err.code(), 4);
        let env = Env::from_lookup(vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .expect("DEL needs no netns");
        assert_eq!(env.command, Command::Del);
        assert!(env.netns.is_none());
        let env = Env::from_lookup(vars(&[("CNI_COMMAND", "VERSION")])).expect("version");
        assert_eq!(env.command, Command::Version);
    }
}
