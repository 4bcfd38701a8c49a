//! SQL Server through tiberius (TDS 7.3+, TLS by rustls) and a deadpool pool with
//! this crate's own [`TdsManager`] (deadpool ships none for tiberius 0.13). One
//! transaction per batch: frames by `INSERT … OUTPUT inserted.frame_id SELECT …
//! FROM (VALUES …) WHERE NOT EXISTS` (under `UPDLOCK, HOLDLOCK`, so two writers of
//! the same frame cannot both insert it), then the detections of the frames that
//! were new, then the stations by `MERGE`. Statements carry at most
//! [`MAX_PARAMS`] parameters (SQL Server takes 2100 per request), so a batch is
//! written in chunks inside its one transaction.
//!
//! The URL is `mssql://user:password@host:1433/database?encrypt=required&trust_server_certificate=false&ca=/path/ca.pem`
//! (`sqlserver://` too), or an ADO.NET connection string
//! (`Server=tcp:host,1433;Database=…;User Id=…;Password=…;Encrypt=true`), or a
//! JDBC one (`jdbc:sqlserver://…`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use deadpool::managed::{Metrics, Object, Pool, RecycleResult};
use tiberius::{AuthMethod, Client, Config, EncryptionLevel, Query, Row};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};
use uuid::Uuid;
use visionq_contract::decision::{Decision, Expectation, Outcome, Review, Verdict};
use visionq_contract::message::ImageSize;
use visionq_contract::{Detection, FrameResult, ModelInfo, ResultStatus};

use crate::store::{
    ClassCount, CountsQuery, Cursor, DECISION_COLUMNS, HistoryQuery, REVIEW_COLUMNS, ResultStore, ReviewQuery, StationSummary,
    StoreError, bucket_start, codes_json, distinct, expectation_of, keep_detection,
};

pub type TdsClient = Client<Compat<TcpStream>>;
pub type TdsPool = Pool<TdsManager>;

/// Parameters per statement (SQL Server's limit is 2100).
pub const MAX_PARAMS: usize = 2000;
/// Columns written per frame and per detection.
pub const FRAME_COLUMNS: [&str; 13] = [
    "frame_id",
    "station",
    "status",
    "error",
    "width",
    "height",
    "model_name",
    "model_version",
    "timings_ms",
    "detection_count",
    "captured_at",
    "received_at",
    "completed_at",
];
pub const DETECTION_COLUMNS: [&str; 13] =
    ["frame_id", "idx", "class_id", "class_name", "score", "x1", "y1", "x2", "y2", "x1_px", "y1_px", "x2_px", "y2_px"];

/// Versioned migrations in T-SQL, applied in order, each once (the same logical
/// schema as `postgres.rs` and `sqlite.rs`).
pub const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE frames (
            frame_id UNIQUEIDENTIFIER NOT NULL CONSTRAINT pk_frames PRIMARY KEY NONCLUSTERED,
            station NVARCHAR(64) NOT NULL,
            status VARCHAR(16) NOT NULL,
            error NVARCHAR(MAX) NULL,
            width INT NOT NULL,
            height INT NOT NULL,
            model_name NVARCHAR(256) NOT NULL,
            model_version NVARCHAR(256) NOT NULL,
            timings_ms NVARCHAR(MAX) NOT NULL,
            detection_count INT NOT NULL,
            captured_at DATETIME2(7) NULL,
            received_at DATETIME2(7) NOT NULL,
            completed_at DATETIME2(7) NOT NULL,
            stored_at DATETIME2(7) NOT NULL CONSTRAINT df_frames_stored_at DEFAULT SYSUTCDATETIME()
        );
        CREATE CLUSTERED INDEX frames_station_received ON frames (station, received_at DESC);
        CREATE TABLE detections (
            frame_id UNIQUEIDENTIFIER NOT NULL
                CONSTRAINT fk_detections_frame REFERENCES frames (frame_id) ON DELETE CASCADE,
            idx INT NOT NULL,
            class_id INT NOT NULL,
            class_name NVARCHAR(128) NOT NULL,
            score REAL NOT NULL,
            x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
            x1_px REAL NOT NULL, y1_px REAL NOT NULL, x2_px REAL NOT NULL, y2_px REAL NOT NULL,
            CONSTRAINT pk_detections PRIMARY KEY (frame_id, idx)
        );",
    ),
    (
        2,
        "CREATE TABLE stations (
            station NVARCHAR(64) NOT NULL CONSTRAINT pk_stations PRIMARY KEY,
            first_seen_at DATETIME2(7) NOT NULL,
            last_seen_at DATETIME2(7) NOT NULL
        );
        INSERT INTO stations (station, first_seen_at, last_seen_at)
            SELECT station, MIN(received_at), MAX(received_at) FROM frames GROUP BY station;
        CREATE INDEX frames_received ON frames (received_at);",
    ),
    (
        3,
        "CREATE TABLE decisions (
            frame_id UNIQUEIDENTIFIER NOT NULL CONSTRAINT pk_decisions PRIMARY KEY
                CONSTRAINT fk_decisions_frame REFERENCES frames (frame_id) ON DELETE CASCADE,
            outcome VARCHAR(16) NOT NULL,
            code NVARCHAR(256) NULL,
            class_name NVARCHAR(128) NULL,
            score REAL NULL,
            similarity REAL NULL,
            expectation_ref NVARCHAR(256) NULL,
            rule NVARCHAR(256) NOT NULL,
            reason NVARCHAR(MAX) NOT NULL
        );
        CREATE INDEX decisions_outcome ON decisions (outcome);
        CREATE TABLE expectations (
            station NVARCHAR(64) NOT NULL CONSTRAINT pk_expectations PRIMARY KEY,
            reference NVARCHAR(256) NOT NULL,
            codes NVARCHAR(MAX) NOT NULL,
            updated_at DATETIME2(7) NOT NULL
        );",
    ),
    (
        4,
        "CREATE TABLE reviews (
            frame_id UNIQUEIDENTIFIER NOT NULL CONSTRAINT pk_reviews PRIMARY KEY
                CONSTRAINT fk_reviews_frame REFERENCES frames (frame_id) ON DELETE CASCADE,
            verdict VARCHAR(16) NOT NULL,
            detection INT NULL,
            class_name NVARCHAR(128) NULL,
            code NVARCHAR(256) NULL,
            reviewer NVARCHAR(256) NULL,
            reviewed_at DATETIME2(7) NOT NULL
        );",
    ),
];

/// Whether a database URL names SQL Server.
pub fn is_mssql_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("mssql://")
        || lower.starts_with("sqlserver://")
        || lower.starts_with("jdbc:sqlserver://")
        || (!lower.contains("://") && lower.contains(';') && (lower.contains("server=") || lower.contains("data source=")))
}

fn bad_url(msg: impl Into<String>) -> StoreError {
    StoreError::BadUrl(msg.into())
}

fn percent_decode(s: &str) -> Result<String, StoreError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| bad_url("truncated %-escape"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad_url("bad %-escape"))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad_url("escape is not UTF-8"))
}

fn truthy(v: &str) -> Result<bool, StoreError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err(bad_url(format!("`{v}` is not a boolean"))),
    }
}

/// Parses a SQL Server URL or connection string into a tiberius config. Encryption
/// defaults to required (TLS for the whole session), verified against the system's
/// roots unless `ca=PATH` or `trust_server_certificate=true` says otherwise.
pub fn parse_config(url: &str) -> Result<Config, StoreError> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("jdbc:sqlserver://") {
        return Config::from_jdbc_string(url).map_err(|e| bad_url(e.to_string()));
    }
    if !lower.starts_with("mssql://") && !lower.starts_with("sqlserver://") {
        return Config::from_ado_string(url).map_err(|e| bad_url(e.to_string()));
    }
    let rest = &url[url.find("://").expect("checked") + 3..];
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let mut config = Config::new();
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
            (h, Some(p.parse::<u16>().map_err(|_| bad_url(format!("port `{p}`")))?))
        }
        _ => (hostport, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad_url("no host"));
    }
    // `host\instance` (as `host%5Cinstance` in a URL) names an instance.
    let host = percent_decode(host)?;
    match host.split_once('\\') {
        Some((h, instance)) => {
            config.host(h);
            config.instance_name(instance);
        }
        None => config.host(&host),
    }
    config.port(port.unwrap_or(1433));
    if !database.is_empty() {
        config.database(percent_decode(database)?);
    }
    if let Some(u) = userinfo {
        let (user, password) = u.split_once(':').unwrap_or((u, ""));
        config.authentication(AuthMethod::sql_server(percent_decode(user)?, percent_decode(password)?));
    }
    config.encryption(EncryptionLevel::Required);
    config.application_name("visionq");
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)?;
        match k.to_ascii_lowercase().replace('-', "_").as_str() {
            "encrypt" => config.encryption(match v.to_ascii_lowercase().as_str() {
                "required" | "true" | "yes" | "strict" => EncryptionLevel::Required,
                "on" => EncryptionLevel::On,
                "off" | "false" | "no" => EncryptionLevel::Off,
                "not_supported" | "none" => EncryptionLevel::NotSupported,
                other => return Err(bad_url(format!("encrypt=`{other}`: use required, on, off or not_supported"))),
            }),
            "trust_server_certificate" | "trustservercertificate" => {
                if truthy(&v)? {
                    config.trust_cert();
                }
            }
            "ca" | "trust_server_certificate_ca" => config.trust_cert_ca(v),
            "hostname_in_certificate" => config.hostname_in_certificate(v),
            "application_name" | "app" => config.application_name(v),
            "instance" => config.instance_name(v),
            "connect_timeout_s" => config
                .handshake_timeout(Some(Duration::from_secs(v.parse().map_err(|_| bad_url(format!("connect_timeout_s=`{v}`")))?))),
            other => return Err(bad_url(format!("unknown parameter `{other}`"))),
        }
    }
    Ok(config)
}

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

fn pool_err(e: deadpool::managed::PoolError<tiberius::error::Error>) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn query_err(e: tiberius::error::Error) -> StoreError {
    match e {
        // The server answered with an error: the statement is at fault.
        tiberius::error::Error::Server(_) => StoreError::Query(e.to_string()),
        // The connection is at fault: an outage.
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// `@P{first}, …, @P{first + n - 1}`.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("@P{i}")).collect::<Vec<_>>().join(", ")
}

/// `(@P1, …, @P13), (@P14, …)` for `rows` rows of `cols` parameters.
fn values_rows(rows: usize, cols: usize) -> String {
    (0..rows).map(|r| format!("({})", placeholders(1 + r * cols, cols))).collect::<Vec<_>>().join(",\n")
}

/// Rows per statement for a row of `cols` parameters.
pub fn rows_per_statement(cols: usize) -> usize {
    MAX_PARAMS / cols
}

/// Inserts the frames not stored yet and returns their ids.
pub fn insert_frames_sql(rows: usize) -> String {
    let cols = FRAME_COLUMNS.join(", ");
    format!(
        "INSERT INTO frames ({cols})\nOUTPUT inserted.frame_id\nSELECT {cols} FROM (VALUES\n{}\n) AS v ({cols})\n\
         WHERE NOT EXISTS (SELECT 1 FROM frames f WITH (UPDLOCK, HOLDLOCK) WHERE f.frame_id = v.frame_id)",
        values_rows(rows, FRAME_COLUMNS.len())
    )
}

pub fn insert_detections_sql(rows: usize) -> String {
    format!("INSERT INTO detections ({}) VALUES\n{}", DETECTION_COLUMNS.join(", "), values_rows(rows, DETECTION_COLUMNS.len()))
}

/// The decisions of `rows` new frames (frame id, then [`DECISION_COLUMNS`]).
pub fn insert_decisions_sql(rows: usize) -> String {
    format!(
        "INSERT INTO decisions (frame_id, {}) VALUES\n{}",
        DECISION_COLUMNS.join(", "),
        values_rows(rows, 1 + DECISION_COLUMNS.len())
    )
}

pub fn decisions_of_sql(frames: usize) -> String {
    format!("SELECT frame_id, {} FROM decisions WHERE frame_id IN ({})", DECISION_COLUMNS.join(", "), placeholders(1, frames))
}

pub fn reviews_of_sql(frames: usize) -> String {
    format!("SELECT frame_id, {} FROM reviews WHERE frame_id IN ({})", REVIEW_COLUMNS.join(", "), placeholders(1, frames))
}

/// @P1 frame id, then [`REVIEW_COLUMNS`]: stored only for a frame with a decision
/// and without a review.
pub fn put_review_sql() -> String {
    format!(
        "INSERT INTO reviews (frame_id, {}) SELECT @P1, @P2, @P3, @P4, @P5, @P6, @P7
         WHERE EXISTS (SELECT 1 FROM decisions WHERE frame_id = @P1)
           AND NOT EXISTS (SELECT 1 FROM reviews WITH (UPDLOCK, HOLDLOCK) WHERE frame_id = @P1)",
        REVIEW_COLUMNS.join(", ")
    )
}

/// @P1 station (or NULL), @P2/@P3 the cursor (received_at, frame_id; or NULL), @P4 limit.
pub fn review_queue_sql() -> String {
    format!(
        "SELECT TOP (@P4) * FROM ({SELECT_FRAME}
         WHERE EXISTS (SELECT 1 FROM decisions x WHERE x.frame_id = f.frame_id AND x.outcome = 'needs_review')
           AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.frame_id = f.frame_id)
           AND (@P1 IS NULL OR station = @P1)
           AND (@P2 IS NULL OR received_at > @P2 OR (received_at = @P2 AND frame_id > @P3))) q
         ORDER BY received_at, frame_id"
    )
}

/// @P1 station, @P2 reference, @P3 codes (JSON).
pub const PUT_EXPECTATION_SQL: &str = "MERGE expectations WITH (HOLDLOCK) AS e
     USING (VALUES (@P1, @P2, @P3)) AS n (station, reference, codes) ON e.station = n.station
     WHEN MATCHED THEN UPDATE SET reference = n.reference, codes = n.codes, updated_at = SYSUTCDATETIME()
     WHEN NOT MATCHED THEN INSERT (station, reference, codes, updated_at) VALUES (n.station, n.reference, n.codes, SYSUTCDATETIME());";

/// Inserts or widens the first/last-seen span of `rows` stations.
pub fn merge_stations_sql(rows: usize) -> String {
    format!(
        "MERGE stations WITH (HOLDLOCK) AS s\n\
         USING (VALUES\n{}\n) AS n (station, first_seen_at, last_seen_at) ON s.station = n.station\n\
         WHEN MATCHED THEN UPDATE SET\n\
             first_seen_at = CASE WHEN n.first_seen_at < s.first_seen_at THEN n.first_seen_at ELSE s.first_seen_at END,\n\
             last_seen_at = CASE WHEN n.last_seen_at > s.last_seen_at THEN n.last_seen_at ELSE s.last_seen_at END\n\
         WHEN NOT MATCHED THEN INSERT (station, first_seen_at, last_seen_at)\n\
             VALUES (n.station, n.first_seen_at, n.last_seen_at);",
        values_rows(rows, 3)
    )
}

const SELECT_FRAME: &str = "SELECT frame_id, station, status, error, width, height, model_name, model_version, timings_ms, \
                            captured_at, received_at, completed_at FROM frames f";

/// @P1 station, @P2 since, @P3 until, @P4 filter on detections (bit), @P5 class,
/// @P6 min score, @P7 limit, @P8/@P9 the cursor (received_at, frame_id), @P10 the
/// decision's outcome.
pub fn history_sql() -> String {
    format!(
        "SELECT TOP (@P7) * FROM ({SELECT_FRAME}
         WHERE station = @P1
           AND (@P2 IS NULL OR received_at >= @P2) AND (@P3 IS NULL OR received_at < @P3)
           AND (@P4 = 0 OR EXISTS (SELECT 1 FROM detections d WHERE d.frame_id = f.frame_id
                AND (@P5 IS NULL OR d.class_name = @P5) AND (@P6 IS NULL OR d.score >= @P6)))
           AND (@P8 IS NULL OR received_at < @P8 OR (received_at = @P8 AND frame_id < @P9))
           AND (@P10 IS NULL OR EXISTS (SELECT 1 FROM decisions x WHERE x.frame_id = f.frame_id AND x.outcome = @P10))) h
         ORDER BY received_at DESC, frame_id DESC"
    )
}

pub fn detections_of_sql(frames: usize) -> String {
    format!(
        "SELECT frame_id, class_id, class_name, score, x1, y1, x2, y2, x1_px, y1_px, x2_px, y2_px
         FROM detections WHERE frame_id IN ({}) ORDER BY frame_id, idx",
        placeholders(1, frames)
    )
}

/// @P1 station, @P2 interval (s), @P3 since, @P4 until, @P5 min score. Seconds since
/// the epoch from days and seconds-of-day: `DATEDIFF(SECOND, …)` alone overflows in 2038.
/// Every station seen, its frame count and latest frame's status.
pub const STATIONS_SQL: &str = "SELECT s.station, s.last_seen_at,
        (SELECT COUNT_BIG(*) FROM frames f WHERE f.station = s.station) AS n,
        (SELECT TOP (1) f.status FROM frames f WHERE f.station = s.station ORDER BY f.received_at DESC, f.frame_id DESC) AS last_status
     FROM stations s ORDER BY s.station";

pub const COUNTS_SQL: &str = "SELECT bucket, class_id, class_name, COUNT_BIG(*) AS n FROM (
         SELECT (t - (((t % @P2) + @P2) % @P2)) / @P2 AS bucket, class_id, class_name FROM (
             SELECT CAST(DATEDIFF(DAY, '19700101', f.received_at) AS BIGINT) * 86400
                    + DATEDIFF(SECOND, CAST(f.received_at AS DATE), f.received_at) AS t, d.class_id, d.class_name
             FROM frames f JOIN detections d ON d.frame_id = f.frame_id
             WHERE f.station = @P1 AND f.received_at >= @P3 AND f.received_at < @P4 AND (@P5 IS NULL OR d.score >= @P5)
         ) x
     ) y
     GROUP BY bucket, class_id, class_name
     ORDER BY bucket, class_id, class_name";

/// @P1 cutoff, @P2 chunk size; detections go by the foreign key's cascade.
pub const PRUNE_SQL: &str = "DELETE FROM frames WHERE frame_id IN
     (SELECT TOP (@P2) frame_id FROM frames WHERE received_at < @P1 ORDER BY received_at)";

pub struct MssqlStore {
    pool: TdsPool,
}

impl MssqlStore {
    /// Every row of a query that takes no parameters.
    async fn all_rows(&self, sql: &'static str) -> Result<Vec<Row>, StoreError> {
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        async { Query::new(sql).query(&mut conn).await?.into_first_result().await }.await.map_err(query_err)
    }

    pub async fn connect(url: &str) -> Result<MssqlStore, StoreError> {
        let config = parse_config(url)?;
        let store = MssqlStore { pool: pool(config, 8, Duration::from_secs(10))? };
        store.migrate().await?;
        Ok(store)
    }

    pub fn pool(&self) -> &TdsPool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        let result = async {
            run(
                &mut conn,
                "SET XACT_ABORT ON; BEGIN TRANSACTION;
                 EXEC sp_getapplock @Resource = 'visionq_migrations', @LockMode = 'Exclusive', @LockOwner = 'Transaction';
                 IF OBJECT_ID(N'visionq_migrations', N'U') IS NULL
                     CREATE TABLE visionq_migrations (version INT NOT NULL PRIMARY KEY,
                                                      applied_at DATETIME2 NOT NULL DEFAULT SYSUTCDATETIME());",
            )
            .await?;
            let applied: Vec<i32> = conn
                .simple_query("SELECT version FROM visionq_migrations")
                .await?
                .into_first_result()
                .await?
                .iter()
                .filter_map(|r| r.get::<i32, _>(0))
                .collect();
            for (version, sql) in MIGRATIONS {
                if !applied.contains(version) {
                    run(&mut conn, sql).await?;
                    let mut q = Query::new("INSERT INTO visionq_migrations (version) VALUES (@P1)");
                    q.bind(*version);
                    q.execute(&mut conn).await?;
                    tracing::info!(version, "applied SQL Server migration");
                }
            }
            run(&mut conn, "COMMIT").await
        }
        .await;
        settle(conn, result).await
    }
}

/// Runs a batch of statements without parameters, reading every result.
async fn run(conn: &mut TdsClient, sql: &str) -> Result<(), tiberius::error::Error> {
    conn.simple_query(sql).await?.into_results().await?;
    Ok(())
}

/// After a transaction: on failure, roll back; a connection that cannot even do
/// that is dropped from the pool instead of being handed out again.
async fn settle<T>(mut conn: Object<TdsManager>, result: Result<T, tiberius::error::Error>) -> Result<T, StoreError> {
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

fn naive_utc(r: &Row, col: &str) -> Result<Option<DateTime<Utc>>, tiberius::error::Error> {
    Ok(r.try_get::<NaiveDateTime, _>(col)?.map(|t| t.and_utc()))
}

/// An integer column, `bigint` or `int` (what an expression yields can differ by server).
fn int(r: &Row, col: &str) -> Result<i64, tiberius::error::Error> {
    match r.try_get::<i64, _>(col) {
        Ok(v) => Ok(v.unwrap_or_default()),
        Err(_) => Ok(r.try_get::<i32, _>(col)?.map(i64::from).unwrap_or_default()),
    }
}

fn text(r: &Row, col: &str) -> Result<String, tiberius::error::Error> {
    Ok(r.try_get::<&str, _>(col)?.unwrap_or_default().to_string())
}

fn frame_of(r: &Row) -> Result<FrameResult, tiberius::error::Error> {
    let status = text(r, "status")?;
    let missing = |c: &str| tiberius::error::Error::Conversion(format!("{c} is NULL").into());
    Ok(FrameResult {
        frame_id: r.try_get::<Uuid, _>("frame_id")?.ok_or_else(|| missing("frame_id"))?,
        station: text(r, "station")?,
        status: ResultStatus::parse(&status)
            .ok_or_else(|| tiberius::error::Error::Conversion(format!("bad status {status}").into()))?,
        error: r.try_get::<&str, _>("error")?.map(str::to_string),
        image: ImageSize {
            width: r.try_get::<i32, _>("width")?.unwrap_or_default() as u32,
            height: r.try_get::<i32, _>("height")?.unwrap_or_default() as u32,
        },
        model: ModelInfo { name: text(r, "model_name")?, version: text(r, "model_version")? },
        detections: Vec::new(),
        decision: None,
        review: None,
        timings_ms: serde_json::from_str(&text(r, "timings_ms")?).unwrap_or_default(),
        captured_at: naive_utc(r, "captured_at")?,
        received_at: naive_utc(r, "received_at")?.ok_or_else(|| missing("received_at"))?,
        completed_at: naive_utc(r, "completed_at")?.ok_or_else(|| missing("completed_at"))?,
    })
}

fn decision_of(r: &Row) -> Result<(Uuid, Decision), tiberius::error::Error> {
    let outcome = text(r, "outcome")?;
    let opt = |c: &str| -> Result<Option<String>, tiberius::error::Error> { Ok(r.try_get::<&str, _>(c)?.map(str::to_string)) };
    Ok((
        r.try_get::<Uuid, _>("frame_id")?.unwrap_or_default(),
        Decision {
            outcome: Outcome::parse(&outcome)
                .ok_or_else(|| tiberius::error::Error::Conversion(format!("bad decision outcome {outcome}").into()))?,
            code: opt("code")?,
            class_name: opt("class_name")?,
            score: r.try_get::<f32, _>("score")?,
            similarity: r.try_get::<f32, _>("similarity")?,
            expectation_ref: opt("expectation_ref")?,
            rule: text(r, "rule")?,
            reason: text(r, "reason")?,
        },
    ))
}

fn review_of(r: &Row) -> Result<(Uuid, Review), tiberius::error::Error> {
    let verdict = text(r, "verdict")?;
    let opt = |c: &str| -> Result<Option<String>, tiberius::error::Error> { Ok(r.try_get::<&str, _>(c)?.map(str::to_string)) };
    Ok((
        r.try_get::<Uuid, _>("frame_id")?.unwrap_or_default(),
        Review {
            verdict: Verdict::parse(&verdict)
                .ok_or_else(|| tiberius::error::Error::Conversion(format!("bad review verdict {verdict}").into()))?,
            detection: r.try_get::<i32, _>("detection")?.map(|i| i as usize),
            class_name: opt("class_name")?,
            code: opt("code")?,
            reviewer: opt("reviewer")?,
            reviewed_at: naive_utc(r, "reviewed_at")?,
        },
    ))
}

fn detection_of(r: &Row) -> Result<(Uuid, Detection), tiberius::error::Error> {
    let f = |c: &str| -> Result<f32, tiberius::error::Error> { Ok(r.try_get::<f32, _>(c)?.unwrap_or_default()) };
    Ok((
        r.try_get::<Uuid, _>("frame_id")?.unwrap_or_default(),
        Detection {
            class_id: r.try_get::<i32, _>("class_id")?.unwrap_or_default() as u32,
            class_name: text(r, "class_name")?,
            score: f("score")?,
            bbox: [f("x1")?, f("y1")?, f("x2")?, f("y2")?],
            box_px: [f("x1_px")?, f("y1_px")?, f("x2_px")?, f("y2_px")?],
            track_id: None,
        },
    ))
}

/// Reads the frames a query selects, with their detections (filtered for history).
async fn load(conn: &mut TdsClient, frames: Query<'_>, hq: Option<&HistoryQuery>) -> Result<Vec<FrameResult>, tiberius::error::Error> {
    let rows = frames.query(conn).await?.into_first_result().await?;
    let mut out = rows.iter().map(frame_of).collect::<Result<Vec<_>, _>>()?;
    if out.is_empty() {
        return Ok(out);
    }
    let mut by_frame: HashMap<Uuid, Vec<Detection>> = HashMap::new();
    for chunk in out.chunks(MAX_PARAMS) {
        let mut q = Query::new(detections_of_sql(chunk.len()));
        for f in chunk {
            q.bind(f.frame_id);
        }
        for r in q.query(conn).await?.into_first_result().await? {
            let (id, d) = detection_of(&r)?;
            if hq.is_none_or(|hq| keep_detection(hq, &d.class_name, d.score)) {
                by_frame.entry(id).or_default().push(d);
            }
        }
    }
    let mut decisions: HashMap<Uuid, Decision> = HashMap::new();
    for chunk in out.chunks(MAX_PARAMS) {
        let mut q = Query::new(decisions_of_sql(chunk.len()));
        for f in chunk {
            q.bind(f.frame_id);
        }
        for r in q.query(conn).await?.into_first_result().await? {
            let (id, d) = decision_of(&r)?;
            decisions.insert(id, d);
        }
    }
    let mut reviews: HashMap<Uuid, Review> = HashMap::new();
    for chunk in out.chunks(MAX_PARAMS) {
        let mut q = Query::new(reviews_of_sql(chunk.len()));
        for f in chunk {
            q.bind(f.frame_id);
        }
        for r in q.query(conn).await?.into_first_result().await? {
            let (id, review) = review_of(&r)?;
            reviews.insert(id, review);
        }
    }
    for f in &mut out {
        f.detections = by_frame.remove(&f.frame_id).unwrap_or_default();
        f.decision = decisions.remove(&f.frame_id);
        f.review = reviews.remove(&f.frame_id);
    }
    Ok(out)
}

async fn write(conn: &mut TdsClient, results: &[FrameResult]) -> Result<usize, tiberius::error::Error> {
    let results = distinct(results);
    run(conn, "SET XACT_ABORT ON; BEGIN TRANSACTION").await?;
    let mut new = std::collections::HashSet::new();
    for chunk in results.chunks(rows_per_statement(FRAME_COLUMNS.len())) {
        let mut q = Query::new(insert_frames_sql(chunk.len()));
        for r in chunk {
            q.bind(r.frame_id);
            q.bind(r.station.clone());
            q.bind(r.status.as_str());
            q.bind(r.error.clone());
            q.bind(r.image.width as i32);
            q.bind(r.image.height as i32);
            q.bind(r.model.name.clone());
            q.bind(r.model.version.clone());
            q.bind(serde_json::to_string(&r.timings_ms).expect("timings serialise"));
            q.bind(r.detections.len() as i32);
            q.bind(r.captured_at);
            q.bind(r.received_at);
            q.bind(r.completed_at);
        }
        for row in q.query(conn).await?.into_first_result().await? {
            if let Some(id) = row.get::<Uuid, _>(0) {
                new.insert(id);
            }
        }
    }
    let dets: Vec<(Uuid, usize, &Detection)> = results
        .iter()
        .filter(|r| new.contains(&r.frame_id))
        .flat_map(|r| r.detections.iter().enumerate().map(move |(i, d)| (r.frame_id, i, d)))
        .collect();
    for chunk in dets.chunks(rows_per_statement(DETECTION_COLUMNS.len())) {
        let mut q = Query::new(insert_detections_sql(chunk.len()));
        for (id, i, d) in chunk {
            q.bind(*id);
            q.bind(*i as i32);
            q.bind(d.class_id as i32);
            q.bind(d.class_name.clone());
            q.bind(d.score);
            for v in d.bbox.iter().chain(d.box_px.iter()) {
                q.bind(*v);
            }
        }
        q.execute(conn).await?;
    }
    let decided: Vec<(Uuid, &Decision)> =
        results.iter().filter(|r| new.contains(&r.frame_id)).filter_map(|r| r.decision.as_ref().map(|d| (r.frame_id, d))).collect();
    for chunk in decided.chunks(rows_per_statement(1 + DECISION_COLUMNS.len())) {
        let mut q = Query::new(insert_decisions_sql(chunk.len()));
        for (id, d) in chunk {
            q.bind(*id);
            q.bind(d.outcome.as_str());
            q.bind(d.code.clone());
            q.bind(d.class_name.clone());
            q.bind(d.score);
            q.bind(d.similarity);
            q.bind(d.expectation_ref.clone());
            q.bind(d.rule.clone());
            q.bind(d.reason.clone());
        }
        q.execute(conn).await?;
    }
    // Stations in name order, so concurrent writers lock them in the same order.
    let mut stations: BTreeMap<&str, (DateTime<Utc>, DateTime<Utc>)> = BTreeMap::new();
    for r in results.iter().filter(|r| new.contains(&r.frame_id)) {
        let e = stations.entry(&r.station).or_insert((r.received_at, r.received_at));
        e.0 = e.0.min(r.received_at);
        e.1 = e.1.max(r.received_at);
    }
    let stations: Vec<_> = stations.into_iter().collect();
    for chunk in stations.chunks(rows_per_statement(3)) {
        let mut q = Query::new(merge_stations_sql(chunk.len()));
        for (s, (first, last)) in chunk {
            q.bind(s.to_string());
            q.bind(*first);
            q.bind(*last);
        }
        q.execute(conn).await?;
    }
    run(conn, "COMMIT").await?;
    Ok(new.len())
}

#[async_trait::async_trait]
impl ResultStore for MssqlStore {
    async fn write_batch(&self, results: &[FrameResult]) -> Result<usize, StoreError> {
        if results.is_empty() {
            return Ok(0);
        }
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        let r = write(&mut conn, results).await;
        settle(conn, r).await
    }

    async fn get(&self, frame_id: Uuid) -> Result<Option<FrameResult>, StoreError> {
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        let mut q = Query::new(format!("{SELECT_FRAME} WHERE frame_id = @P1"));
        q.bind(frame_id);
        Ok(load(&mut conn, q, None).await.map_err(query_err)?.pop())
    }

    async fn history(&self, hq: &HistoryQuery) -> Result<Vec<FrameResult>, StoreError> {
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        let mut q = Query::new(history_sql());
        q.bind(hq.station.clone());
        q.bind(hq.since);
        q.bind(hq.until);
        q.bind(hq.class.is_some() || hq.min_score.is_some());
        q.bind(hq.class.clone());
        q.bind(hq.min_score);
        q.bind(hq.limit as i64);
        q.bind(hq.before.map(|c| c.received_at));
        q.bind(hq.before.map(|c| c.frame_id));
        q.bind(hq.outcome.map(|o| o.as_str()));
        load(&mut conn, q, Some(hq)).await.map_err(query_err)
    }

    async fn counts(&self, cq: &CountsQuery) -> Result<Vec<ClassCount>, StoreError> {
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        let mut q = Query::new(COUNTS_SQL);
        q.bind(cq.station.clone());
        q.bind(cq.interval_s);
        q.bind(cq.since);
        q.bind(cq.until);
        q.bind(cq.min_score);
        let rows = async { q.query(&mut conn).await?.into_first_result().await }.await.map_err(query_err)?;
        rows.iter()
            .map(|r| {
                Ok(ClassCount {
                    bucket: bucket_start(int(r, "bucket")? * cq.interval_s, cq.interval_s),
                    class_id: r.try_get::<i32, _>("class_id")?.unwrap_or_default() as u32,
                    class_name: text(r, "class_name")?,
                    count: int(r, "n")? as u64,
                })
            })
            .collect::<Result<_, tiberius::error::Error>>()
            .map_err(query_err)
    }

    async fn stations(&self) -> Result<Vec<StationSummary>, StoreError> {
        let rows = self.all_rows(STATIONS_SQL).await?;
        rows.iter()
            .map(|r| {
                let missing = || tiberius::error::Error::Conversion("last_seen_at is NULL".into());
                Ok(StationSummary {
                    station: text(r, "station")?,
                    last_frame_at: naive_utc(r, "last_seen_at")?.ok_or_else(missing)?,
                    frames: int(r, "n")? as u64,
                    last_status: r.try_get::<&str, _>("last_status")?.and_then(ResultStatus::parse),
                })
            })
            .collect::<Result<_, tiberius::error::Error>>()
            .map_err(query_err)
    }

    async fn prune(&self, cutoff: DateTime<Utc>, max_frames: usize) -> Result<usize, StoreError> {
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        let mut q = Query::new(PRUNE_SQL);
        q.bind(cutoff);
        q.bind(max_frames as i64);
        // Detections deleted by the cascade count in the total too: count frames only.
        let r = q.execute(&mut conn).await.map_err(query_err)?;
        Ok(r.rows_affected().last().copied().unwrap_or(0) as usize)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let ping = async {
            let mut conn = self.pool.get().await.map_err(pool_err)?;
            run(&mut conn, "SELECT 1").await.map_err(query_err)
        };
        // Readiness probes time out in a second or two; answer before they do.
        tokio::time::timeout(crate::store::PING_TIMEOUT, ping).await.unwrap_or_else(|_| Err(crate::store::ping_timed_out()))
    }

    async fn review_backlog(&self) -> Result<u64, StoreError> {
        let rows = self
            .all_rows(
                "SELECT COUNT_BIG(*) AS n FROM decisions x
                 WHERE x.outcome = 'needs_review' AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.frame_id = x.frame_id)",
            )
            .await?;
        Ok(rows.first().map(|r| int(r, "n")).transpose().map_err(query_err)?.unwrap_or(0) as u64)
    }

    async fn review_queue(&self, rq: &ReviewQuery) -> Result<Vec<FrameResult>, StoreError> {
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        let mut q = Query::new(review_queue_sql());
        q.bind(rq.station.clone());
        q.bind(rq.after.map(|c: Cursor| c.received_at));
        q.bind(rq.after.map(|c| c.frame_id));
        q.bind(rq.limit as i64);
        load(&mut conn, q, None).await.map_err(query_err)
    }

    async fn put_review(&self, frame_id: Uuid, review: &Review) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        let mut q = Query::new(put_review_sql());
        q.bind(frame_id);
        q.bind(review.verdict.as_str());
        q.bind(review.detection.map(|i| i as i32));
        q.bind(review.class_name.clone());
        q.bind(review.code.clone());
        q.bind(review.reviewer.clone());
        q.bind(review.reviewed_at.unwrap_or_else(Utc::now));
        let r = q.execute(&mut conn).await.map_err(query_err)?;
        Ok(r.total() == 1)
    }

    async fn expectations(&self) -> Result<Vec<(String, Expectation)>, StoreError> {
        let rows = self.all_rows("SELECT station, reference, codes FROM expectations ORDER BY station").await?;
        let mut out = Vec::new();
        for r in &rows {
            let (station, reference, codes) = (
                text(r, "station").map_err(query_err)?,
                text(r, "reference").map_err(query_err)?,
                text(r, "codes").map_err(query_err)?,
            );
            out.push((station, expectation_of(reference, &codes)?));
        }
        Ok(out)
    }

    async fn put_expectation(&self, station: &str, expectation: &Expectation) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        let mut q = Query::new(PUT_EXPECTATION_SQL);
        q.bind(station.to_string());
        q.bind(expectation.reference.clone());
        q.bind(codes_json(expectation));
        q.execute(&mut conn).await.map_err(query_err)?;
        Ok(())
    }

    async fn delete_expectation(&self, station: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        let mut q = Query::new("DELETE FROM expectations WHERE station = @P1");
        q.bind(station.to_string());
        let r = q.execute(&mut conn).await.map_err(query_err)?;
        Ok(r.total() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params_in(sql: &str) -> Vec<usize> {
        let mut out = Vec::new();
        let mut rest = sql;
        while let Some(i) = rest.find("@P") {
            rest = &rest[i + 2..];
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            out.push(n.parse().unwrap());
        }
        out
    }

    #[test]
    fn frame_insert_numbers_every_parameter_once_and_fits_a_request() {
        let rows = rows_per_statement(FRAME_COLUMNS.len());
        assert!(rows * FRAME_COLUMNS.len() <= 2100);
        let sql = insert_frames_sql(rows);
        let p = params_in(&sql);
        assert_eq!(p, (1..=rows * 13).collect::<Vec<_>>());
        assert!(sql.contains("WITH (UPDLOCK, HOLDLOCK)"), "{sql}");
        assert!(sql.contains("OUTPUT inserted.frame_id"));
        assert_eq!(insert_frames_sql(2).matches('(').count(), insert_frames_sql(2).matches(')').count());
        assert!(insert_frames_sql(1).contains("(@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10, @P11, @P12, @P13)"));
    }

    #[test]
    fn detection_insert_and_station_merge() {
        let sql = insert_detections_sql(2);
        assert!(sql.starts_with("INSERT INTO detections (frame_id, idx, class_id, class_name, score, x1"));
        assert!(sql.ends_with("(@P14, @P15, @P16, @P17, @P18, @P19, @P20, @P21, @P22, @P23, @P24, @P25, @P26)"));
        let m = merge_stations_sql(2);
        assert_eq!(params_in(&m), vec![1, 2, 3, 4, 5, 6]);
        assert!(m.trim_end().ends_with(';'), "MERGE must end with a semicolon");
    }

    #[test]
    fn reads_use_only_their_parameters() {
        let h = history_sql();
        let mut p = params_in(&h);
        p.sort();
        p.dedup();
        assert_eq!(p, (1..=10).collect::<Vec<_>>());
        assert!(h.contains("TOP (@P7)") && h.contains("ORDER BY received_at DESC, frame_id DESC"));
        let mut c = params_in(COUNTS_SQL);
        c.sort();
        c.dedup();
        assert_eq!(c, vec![1, 2, 3, 4, 5]);
        assert_eq!(params_in(&detections_of_sql(3)), vec![1, 2, 3]);
        assert_eq!(params_in(&decisions_of_sql(2)), vec![1, 2]);
        assert_eq!(params_in(&reviews_of_sql(2)), vec![1, 2]);
        let mut r = params_in(&put_review_sql());
        r.sort();
        r.dedup();
        assert_eq!(r, (1..=7).collect::<Vec<_>>());
        let mut r = params_in(&review_queue_sql());
        r.sort();
        r.dedup();
        assert_eq!(r, vec![1, 2, 3, 4]);
        assert_eq!(params_in(&insert_decisions_sql(2)), (1..=18).collect::<Vec<_>>());
        assert!(rows_per_statement(9) * 9 <= 2100);
        let mut e = params_in(PUT_EXPECTATION_SQL);
        e.dedup();
        assert_eq!(e, vec![1, 2, 3]);
        assert!(PUT_EXPECTATION_SQL.trim_end().ends_with(';'), "MERGE must end with a semicolon");
        assert!(PRUNE_SQL.contains("TOP (@P2)"));
    }

    /// Table → column names, from the `CREATE TABLE`s of a dialect's migrations.
    fn schema(migrations: &[(i32, &str)]) -> BTreeMap<String, Vec<String>> {
        let mut tables = BTreeMap::new();
        for (_, sql) in migrations {
            let mut rest = *sql;
            while let Some(i) = rest.find("CREATE TABLE ") {
                rest = &rest[i + 13..];
                let name = rest.split_whitespace().next().unwrap().to_string();
                let body = &rest[rest.find('(').unwrap() + 1..];
                let (mut depth, mut cols, mut start) = (0, Vec::new(), 0);
                for (j, ch) in body.char_indices() {
                    match ch {
                        '(' => depth += 1,
                        ')' if depth == 0 => {
                            cols.push(&body[start..j]);
                            break;
                        }
                        ')' => depth -= 1,
                        ',' if depth == 0 => {
                            cols.push(&body[start..j]);
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
                let mut names: Vec<String> = cols
                    .iter()
                    .filter_map(|c| c.split_whitespace().next())
                    .filter(|w| !matches!(w.to_ascii_uppercase().as_str(), "PRIMARY" | "CONSTRAINT"))
                    .map(str::to_string)
                    .collect();
                names.sort();
                tables.insert(name, names);
            }
        }
        tables
    }

    #[test]
    fn one_logical_schema_in_every_dialect() {
        let ms = schema(MIGRATIONS);
        assert_eq!(ms.keys().collect::<Vec<_>>(), vec!["decisions", "detections", "expectations", "frames", "reviews", "stations"]);
        assert_eq!(schema(crate::postgres::MIGRATIONS), ms, "PostgreSQL and SQL Server");
        assert_eq!(schema(crate::sqlite::MIGRATIONS), ms, "SQLite and SQL Server");
        let versions = |m: &[(i32, &str)]| m.iter().map(|(v, _)| *v).collect::<Vec<_>>();
        assert_eq!(versions(crate::postgres::MIGRATIONS), versions(MIGRATIONS));
        assert_eq!(versions(crate::sqlite::MIGRATIONS), versions(MIGRATIONS));
        for c in FRAME_COLUMNS {
            assert!(ms["frames"].iter().any(|n| n == c), "{c}");
        }
        for c in DETECTION_COLUMNS {
            assert!(ms["detections"].iter().any(|n| n == c), "{c}");
        }
        for c in DECISION_COLUMNS {
            assert!(ms["decisions"].iter().any(|n| n == c), "{c}");
        }
        for c in REVIEW_COLUMNS {
            assert!(ms["reviews"].iter().any(|n| n == c), "{c}");
        }
    }

    #[test]
    fn urls_and_connection_strings_parse() {
        let c = parse_config("mssql://sa:p%40ss@db.example:1434/visionq?trust_server_certificate=true").unwrap();
        assert_eq!(c.get_addr(), "db.example:1434");
        let c = parse_config("sqlserver://sa:x@db.example/visionq").unwrap();
        assert_eq!(c.get_addr(), "db.example:1433");
        let c = parse_config("Server=tcp:db.example,1435;Database=visionq;User Id=sa;Password=x;Encrypt=true").unwrap();
        assert_eq!(c.get_addr(), "db.example:1435");
        assert!(parse_config("mssql://sa:x@db.example/visionq?encrypt=maybe").is_err());
        assert!(parse_config("mssql://sa:x@db.example/visionq?colour=blue").is_err());
        assert!(parse_config("mssql://sa:x@:1433/visionq").is_err());
        assert!(is_mssql_url("mssql://h/db"));
        assert!(is_mssql_url("Server=tcp:h,1433;Database=d"));
        assert!(!is_mssql_url("postgres://h/db"));
        assert!(!is_mssql_url("sqlite:///tmp/x.db"));
    }
}
