//! Business calendars and SLA arithmetic (pure, time passed in).
//!
//! This crate is part of the workspace layout (docs/architecture.md); its contents arrive with
//! the issue that owns them.
