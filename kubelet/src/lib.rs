//! The kubesim kubelet. Today: simulated nodes (KWOK-style) that register Node objects
//! and run the pods bound to them as status only, so the control plane can be tested
//! and measured at scale without network namespaces.

pub mod simulated;
