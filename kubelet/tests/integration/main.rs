//! The simulated kubelet against a real apiserver started in-process, with node IPAM
//! and the scheduler from `controller`, observed through the API like any client.

mod harness;
mod simulated;
