//! The kubesim kubelet: nodes and the pods bound to them.
//!
//! - `flannel`: flannel's VXLAN backend for nodes in network namespaces: the
//!   `flannel.1` device and its neighbour, FDB and route entries driven by Node objects,
//!   `subnet.env` and the masquerade rules.
//! - `node`: the kubelet of a real node, running inside the node's namespace: pods as
//!   sandboxes of real namespaces wired by the CNI plugin, containers as processes,
//!   probes, status, graceful termination, and the log API the apiserver proxies to.
//! - `sandbox`: the pause process holding a pod's namespaces, the entry of container
//!   processes into them, and the pod's `/etc/resolv.conf` and `/etc/hosts`.
//! - `speaker`: the layer-2 announcement of LoadBalancer addresses (MetalLB's speaker):
//!   the elected node holds the address on its underlay interface and sends
//!   gratuitous ARP.
//! - `simulated`: KWOK-style nodes that register Node objects and run their pods as
//!   status only, so the control plane can be tested and measured at scale.
//! - `topology`: the cluster's hosts as real network namespaces on one underlay (an
//!   underlay bridge, node namespaces, an external client host), removed on drop.
//! - `workload`: the built-in workloads a container image maps to (nginx, agnhost) and
//!   the host commands of the others.

pub mod flannel;
pub mod node;
pub mod sandbox;
pub mod simulated;
pub mod speaker;
pub mod topology;
pub mod workload;
