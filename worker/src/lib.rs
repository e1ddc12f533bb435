//! Hosting activities in-process and as remote workers.
//!
//! This crate is part of the workspace layout (docs/architecture.md); its contents arrive with
//! the issue that owns them.
