//! The HTTP and gRPC APIs, the web UI and authentication.
//!
//! This crate is part of the workspace layout (docs/architecture.md); its contents arrive with
//! the issue that owns them.
