//! In-memory store for unit tests.
