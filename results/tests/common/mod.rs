//! Stores under test: a fresh PostgreSQL database (dropped afterwards), a fresh
//! SQLite file, or the SQL Server `VISIONQ_TEST_MSSQL_URL` names.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use visionq_results::{open_store, SharedStore};

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MSSQL_ENV: &str = "VISIONQ_TEST_MSSQL_URL";

/// A name no other test (or test run) uses.
pub fn unique(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("t{}_{}_{}_{tag}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), nanos % 100_000)
}

/// A fresh PostgreSQL database, dropped with the value.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new(tag: &str) -> TestDb {
        let name = unique(tag).to_lowercase();
        let (client, conn) = tokio_postgres::connect(PG_ADMIN_URL, tokio_postgres::NoTls).await.expect("PostgreSQL at 127.0.0.1:5432");
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
        TestDb { url: format!("postgres://postgres@127.0.0.1:5432/{name}"), name }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.expect("connect test db");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(PG_ADMIN_URL, tokio_postgres::NoTls).await {
                    tokio::spawn(conn);
                    let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
                }
            })
        })
        .join();
    }
}

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
