//! Shared API vocabulary for kubesim: field errors as apimachinery words them, label and
//! field selectors, object validation, patch algorithms (JSON, merge, strategic merge,
//! server-side apply), the column layout of `kubectl get` tables, and the texts of
//! the apiserver's decoders for bodies they cannot read.
//!
//! Everything here is pure: no I/O, no clocks except those passed in, so each piece is
//! tested directly and shared by the apiserver and the controllers.

pub mod alloc;
pub mod apply;
pub mod body;
pub mod defaults;
pub mod field;
pub mod patch;
pub mod proto;
pub mod selector;
pub mod table;
pub mod validation;
