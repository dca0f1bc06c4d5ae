//! The kubesim API server.
