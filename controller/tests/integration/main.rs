//! The controllers against a real apiserver started in-process, driven and observed
//! through kube-rs like any client.

mod deployment;
mod endpoints;
mod harness;
mod scheduling;
