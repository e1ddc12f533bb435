//! The Serverless Workflow DSL: model, parser with spans, validation, jq, the deterministic interpreter.
//!
//! This crate is part of the workspace layout (docs/architecture.md); its contents arrive with
//! the issue that owns them.
