//! Built-in activity implementations: http, notify channels, document storage, SQL, AMQP.
//!
//! This crate is part of the workspace layout (docs/architecture.md); its contents arrive with
//! the issue that owns them.
