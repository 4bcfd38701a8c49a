//! Shared by the results crate's tests and the visionq binary's tests (included by
//! path): unique names and a fresh PostgreSQL database per test.

use std::sync::atomic::{AtomicUsize, Ordering};

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

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
