//! Choosing the store a database URL names. Apart from the store trait, so that no
//! backend imports the chooser that imports every backend.

use std::sync::Arc;

use crate::store::{SharedStore, StoreError};

/// Opens (and migrates) the store a URL names.
pub async fn open_store(url: &str) -> Result<SharedStore, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(crate::postgres::PgStore::connect(url).await?))
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(crate::sqlite::SqliteStore::open(path).await?))
    } else if crate::mssql::is_mssql_url(url) {
        Ok(Arc::new(crate::mssql::MssqlStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(visionq_contract::config::redact_url(url)))
    }
}
