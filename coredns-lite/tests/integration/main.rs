//! coredns-lite against a real apiserver and the EndpointSlice controller started
//! in-process, probed only with the real `dig` and `nslookup` over loopback.

mod dns;
mod harness;
