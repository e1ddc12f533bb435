//! Opening a store from a URL: `sqlite:///abs/path.db`, `sqlite://relative.db`, or a path.

use std::sync::Arc;

use anyhow::Context;
use baton_engine::Store;
use baton_engine::store::sqlite::{SqliteOptions, SqliteStore};

pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    open_with(url, SqliteOptions::default()).await
}

/// The SQLite store behind a URL, for what only SQLite does (backups).
pub async fn open_sqlite(url: &str) -> anyhow::Result<SqliteStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        anyhow::bail!("backups of PostgreSQL stores are taken with pg_dump");
    }
    SqliteStore::open(url, SqliteOptions::default()).await.with_context(|| format!("cannot open the store {url}"))
}

pub async fn open_with(url: &str, options: SqliteOptions) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        anyhow::bail!("PostgreSQL stores are not available yet; use sqlite:///path/to/baton.db");
    }
    let store = SqliteStore::open(url, options).await.with_context(|| format!("cannot open the store {url}"))?;
    Ok(Arc::new(store))
}
