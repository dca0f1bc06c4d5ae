//! The kubesim kubelet: nodes and the pods bound to them.
//!
//! - `simulated`: KWOK-style nodes that register Node objects and run their pods as
//!   status only, so the control plane can be tested and measured at scale.
//! - `topology`: the cluster's hosts as real network namespaces on one underlay (an
//!   underlay bridge, node namespaces, an external client host), removed on drop.

pub mod simulated;
pub mod topology;
