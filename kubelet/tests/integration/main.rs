//! The simulated kubelet against a real apiserver started in-process, with node IPAM
//! and the scheduler from `controller`, observed through the API like any client; and
//! the network-namespace topology, checked with `ip` and `ping`; and flannel's VXLAN
//! overlay between its nodes.

mod flannel;
mod harness;
mod simulated;
mod topology;
