//! Black-box tests of the `kubesim` binary, driven by real clients: kubectl (several
//! versions), kube-rs and the Python `kubernetes` package.

mod clients;
mod cni;
mod controllers;
mod dns;
mod durability;
mod harness;
mod ingress;
mod kubectl;
mod labs;
mod lifecycle;
mod loadbalancer;
mod netcluster;
mod nftables;
mod overlay;
mod pods;
mod services;
mod spdy;
mod traffic;
mod up;
mod userspace;
