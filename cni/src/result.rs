//! The success result of ADD (SPEC.md, "Success"), rendered for the version the runtime
//! asked for: 0.3.x and 0.4.0 carry `"version": "4"` on each IP, 1.x do not.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

/// One interface the plugin created or used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    pub sandbox: Option<String>,
}

/// What ADD did: interfaces, the address (on `interface`, an index into `interfaces`)
/// and the default route through the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    pub interfaces: Vec<Interface>,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub interface: usize,
}

impl AddResult {
    /// The result JSON for `cni_version`.
    pub fn render(&self, cni_version: &str) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut v = json!({"name": i.name, "mac": i.mac});
                if let Some(sandbox) = &i.sandbox {
                    v["sandbox"] = json!(sandbox);
                }
                v
            })
            .collect();
        let mut ip = json!({
            "address": format!("{}/{}", self.address, self.prefix),
            "gateway": self.gateway.to_string(),
            "interface": self.interface,
        });
        if cni_version.starts_with("0.") {
            ip["version"] = json!("4");
        }
        json!({
            "cniVersion": cni_version,
            "interfaces": interfaces,
            "ips": [ip],
            "routes": [{"dst": "0.0.0.0/0", "gw": self.gateway.to_string()}],
            "dns": {},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> AddResult {
        AddResult {
            interfaces: vec![
                Interface {
                    name: "cni0".into(),
                    mac: "aa:bb:cc:00:00:01".into(),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "aa:bb:cc:00:00:02".into(),
                    sandbox: Some("/var/run/netns/pod".into()),
                },
            ],
            address: Ipv4Addr::new(10, 244, 1, 2),
            prefix: 24,
            gateway: Ipv4Addr::new(10, 244, 1, 1),
            interface: 1,
        }
    }

    #[test]
    fn renders_a_1_1_result() {
        assert_eq!(
            result().render("1.1.0"),
            json!({
                "cniVersion": "1.1.0",
                "interfaces": [
                    {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
                    {"name": "eth0", "mac": "aa:bb:cc:00:00:02", "sandbox": "/var/run/netns/pod"},
                ],
                "ips": [{"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
                "dns": {},
            })
        );
    }

    #[test]
    fn old_versions_carry_the_ip_version() {
        assert_eq!(result().render("0.4.0")["ips"][0]["version"], json!("4"));
    }
}
