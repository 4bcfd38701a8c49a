//! Connections to SQL Server: opening one (TCP, TLS, login, Azure redirects), the
//! deadpool manager and pool, running a statement batch, settling a transaction,
//! and mapping tiberius and pool errors to [`StoreError`].

use std::time::Duration;

use deadpool::managed::{Metrics, Object, Pool, RecycleResult};
use tiberius::{Client, Config};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use crate::store::StoreError;

pub type TdsClient = Client<Compat<TcpStream>>;
pub type TdsPool = Pool<TdsManager>;

/// Opens one connection, following an Azure SQL routing redirect.
pub async fn connect(config: &Config) -> Result<TdsClient, tiberius::error::Error> {
    let tcp = TcpStream::connect(config.get_addr()).await?;
    tcp.set_nodelay(true)?;
    match Client::connect(config.clone(), tcp.compat_write()).await {
        Err(tiberius::error::Error::Routing { host, port }) => {
            let mut redirected = config.clone();
            redirected.host(&host);
            redirected.port(port);
            let tcp = TcpStream::connect(redirected.get_addr()).await?;
            tcp.set_nodelay(true)?;
            Client::connect(redirected, tcp.compat_write()).await
        }
        other => other,
    }
}

/// The deadpool manager for tiberius connections: creates them with [`connect`],
/// recycles them after a `SELECT 1` (a broken or mid-transaction connection fails
/// it and is replaced).
pub struct TdsManager {
    config: Config,
}

impl TdsManager {
    pub fn new(config: Config) -> Self {
        TdsManager { config }
    }
}

impl deadpool::managed::Manager for TdsManager {
    type Type = TdsClient;
    type Error = tiberius::error::Error;

    async fn create(&self) -> Result<TdsClient, Self::Error> {
        connect(&self.config).await
    }

    async fn recycle(&self, client: &mut TdsClient, _: &Metrics) -> RecycleResult<Self::Error> {
        client.simple_query("SELECT 1").await?.into_results().await?;
        Ok(())
    }
}

/// A pool of at most `max_size` connections; waiting for one, or opening one, gives
/// up after `timeout`.
pub fn pool(config: Config, max_size: usize, timeout: Duration) -> Result<TdsPool, StoreError> {
    Pool::builder(TdsManager::new(config))
        .max_size(max_size)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}

pub(super) fn pool_err(e: deadpool::managed::PoolError<tiberius::error::Error>) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(super) fn query_err(e: tiberius::error::Error) -> StoreError {
    match e {
        // The server answered with an error: the statement is at fault.
        tiberius::error::Error::Server(_) => StoreError::Query(e.to_string()),
        // The connection is at fault: an outage.
        _ => StoreError::Unavailable(e.to_string()),
    }
}
/// Runs a batch of statements without parameters, reading every result.
pub(super) async fn run(conn: &mut TdsClient, sql: &str) -> Result<(), tiberius::error::Error> {
    conn.simple_query(sql).await?.into_results().await?;
    Ok(())
}

/// After a transaction: on failure, roll back; a connection that cannot even do
/// that is dropped from the pool instead of being handed out again.
pub(super) async fn settle<T>(mut conn: Object<TdsManager>, result: Result<T, tiberius::error::Error>) -> Result<T, StoreError> {
    match result {
        Ok(v) => Ok(v),
        Err(e) => {
            if run(&mut conn, "IF @@TRANCOUNT > 0 ROLLBACK").await.is_err() {
                let _ = Object::take(conn);
            }
            Err(query_err(e))
        }
    }
}
