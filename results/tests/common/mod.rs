//! Stores under test: a fresh PostgreSQL database (dropped afterwards), a fresh
//! SQLite file, or the SQL Server `VISIONQ_TEST_MSSQL_URL` names.

#![allow(dead_code)]

use visionq_results::{SharedStore, open_store};

pub const MSSQL_ENV: &str = "VISIONQ_TEST_MSSQL_URL";

mod pg;
pub use pg::*;

/// A temporary SQLite file, removed with the value.
pub struct TempFile(pub std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", self.0.display()));
        }
    }
}

/// A store under test and what to clean up after it.
pub struct Backend {
    pub store: SharedStore,
    _pg: Option<TestDb>,
    _file: Option<TempFile>,
}

impl Backend {
    pub async fn postgres(tag: &str) -> Option<Backend> {
        let db = TestDb::new(tag).await;
        let store = open_store(&db.url).await.expect("open PostgreSQL store");
        Some(Backend { store, _pg: Some(db), _file: None })
    }

    pub async fn sqlite(tag: &str) -> Option<Backend> {
        let path = std::env::temp_dir().join(format!("visionq-{}.db", unique(tag)));
        let store = open_store(&format!("sqlite://{}", path.display())).await.expect("open SQLite store");
        Some(Backend { store, _pg: None, _file: Some(TempFile(path)) })
    }

    /// The SQL Server of `VISIONQ_TEST_MSSQL_URL`, or `None` (skipped, said so) when unset.
    pub async fn mssql(tag: &str) -> Option<Backend> {
        let Ok(url) = std::env::var(MSSQL_ENV) else {
            // Straight to stderr (the test harness captures eprintln!), once per run.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: the SQL Server store tests ({tag} and the rest of `mssql::`): no SQL Server here; \
                     set {MSSQL_ENV}=mssql://user:password@host:1433/database to run them against one"
                );
            });
            return None;
        };
        let store = open_store(&url).await.expect("open SQL Server store");
        Some(Backend { store, _pg: None, _file: None })
    }
}
