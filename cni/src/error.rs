//! The plugin's errors and the CNI error codes (SPEC.md, "Error") they are reported with.

use serde_json::json;

/// Everything that can go wrong while the plugin runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("incompatible CNI version {0}")]
    IncompatibleVersion(String),
    #[error("unsupported field {0}")]
    UnsupportedField(String),
    #[error("unknown container {0}")]
    UnknownContainer(String),
    #[error("invalid environment variable {name}: {reason}")]
    InvalidEnv { name: &'static str, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to decode the network configuration: {0}")]
    Decode(String),
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    #[error("try again later: {0}")]
    TryAgain(String),
    #[error("interface {0} already exists in the container")]
    InterfaceExists(String),
    #[error("no free address left in {0}")]
    RangeFull(String),
    #[error("check failed: {0}")]
    Check(String),
    #[error("netlink: {context}: {message}")]
    Netlink { context: String, message: String },
}

impl From<netns::Error> for Error {
    fn from(err: netns::Error) -> Self {
        match err {
            netns::Error::Io { context, source } => Error::Io { context, source },
            netns::Error::Netlink { context, source } => Error::netlink(context, source),
            other => Error::netlink("network namespace", other),
        }
    }
}

/// `Result` with the plugin's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// A netlink failure with what was being done.
    pub fn netlink(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        Self::Netlink {
            context: context.into(),
            message: err.to_string(),
        }
    }

    /// The SPEC's error code: 1-99 are the well-known ones, 100 and up are ours.
    pub fn code(&self) -> u32 {
        match self {
            Self::IncompatibleVersion(_) => 1,
            Self::UnsupportedField(_) => 2,
            Self::UnknownContainer(_) => 3,
            Self::InvalidEnv { .. } => 4,
            Self::Io { .. } => 5,
            Self::Decode(_) => 6,
            Self::InvalidConfig(_) => 7,
            Self::TryAgain(_) => 11,
            Self::InterfaceExists(_) => 100,
            Self::RangeFull(_) => 101,
            Self::Check(_) => 102,
            Self::Netlink { .. } => 103,
        }
    }

    /// The error JSON the SPEC asks for on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code(),
            "msg": self.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_spec() {
        let cases = [
            (Error::IncompatibleVersion("9.9.9".into()), 1),
            (Error::UnsupportedField("x".into()), 2),
            (Error::UnknownContainer("c".into()), 3),
            (
                Error::InvalidEnv {
                    name: "CNI_COMMAND",
                    reason: "missing".into(),
                },
                4,
            ),
            (Error::io("reading", std::io::Error::other("boom")), 5),
            (Error::Decode("eof".into()), 6),
            (Error::InvalidConfig("no ipam".into()), 7),
            (Error::TryAgain("busy".into()), 11),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn error_json_has_version_code_and_message() {
        let err = Error::InvalidEnv {
            name: "CNI_NETNS",
            reason: "missing".into(),
        };
        assert_eq!(
            err.to_json("1.1.0"),
            json!({
                "cniVersion": "1.1.0",
                "code": 4,
                "msg": "invalid environment variable CNI_NETNS: missing",
            })
        );
    }
}
