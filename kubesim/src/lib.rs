//! The library side of the `kubesim` binary: what the CLI and the integration tests
//! share.

pub mod cluster;
pub mod explain;
pub mod kubeconfig;
pub mod scenario;
