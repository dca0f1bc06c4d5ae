//! The simulated kubelet against a real apiserver started in-process, with node IPAM
//! and the scheduler from `controller`, observed through the API like any client; and
//! the network-namespace topology, checked with `ip` and `ping`.

mod harness;
mod simulated;
mod topology;
