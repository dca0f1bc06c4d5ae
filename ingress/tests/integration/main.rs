//! The ingress controller against a real apiserver, each test in a network namespace
//! of its own, probed only with the real `curl`.

mod harness;
mod reload;
mod routing;
mod status;
mod tls;
