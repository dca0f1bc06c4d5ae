//! The nftables proxier's hands on the node's netfilter: `nft -f -` runs a sync's
//! transaction atomically, `nft list table` tells whether the table is still there.
//! Everything runs in the namespace the proxy runs in.

use crate::kernel::{run, Result};

use super::TABLE;

/// Runs one transaction: every statement applies, or none does.
pub async fn apply(transaction: &str) -> Result<()> {
    run("nft", &["-f", "-"], Some(transaction)).await.map(drop)
}

/// The table as `nft list table ip kube-proxy` prints it.
pub async fn list_table() -> Result<String> {
    run("nft", &["list", "table", "ip", TABLE], None).await
}

/// Whether the table is still there (nobody deleted it since the last sync).
pub async fn table_exists() -> bool {
    list_table().await.is_ok()
}

/// Deletes the table and everything in it, if it exists (`kube-proxy --cleanup`):
/// adding it first makes the deletion succeed either way.
pub async fn cleanup() -> Result<()> {
    apply(&format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")).await
}
