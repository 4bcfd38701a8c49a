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
//!
//! One job per file: `url` (which URLs name SQL Server; parsing one), `pool`
//! (connections, the pool, running a batch, error mapping), `sql` (the T-SQL text),
//! `schema` (the migrations), `rows` (rows to results and back, loading and
//! writing), and this file, the store ([`MssqlStore`]) over them.

mod pool;
mod rows;
mod schema;
mod sql;
mod url;

use std::time::Duration;

use chrono::{DateTime, Utc};
use tiberius::{Query, Row};
use uuid::Uuid;
use visionq_contract::decision::{Expectation, Review};
use visionq_contract::{FrameResult, ResultStatus};

pub use self::pool::{TdsClient, TdsManager, TdsPool, connect, pool};
use self::pool::{pool_err, query_err, run, settle};
use self::rows::{int, load, naive_utc, text, write};
pub use self::schema::MIGRATIONS;
use self::sql::SELECT_FRAME;
pub use self::sql::{
    COUNTS_SQL, DETECTION_COLUMNS, FRAME_COLUMNS, MAX_PARAMS, PRUNE_SQL, PUT_EXPECTATION_SQL, STATIONS_SQL, decisions_of_sql,
    detections_of_sql, history_sql, insert_decisions_sql, insert_detections_sql, insert_frames_sql, merge_stations_sql,
    put_review_sql, review_queue_sql, reviews_of_sql, rows_per_statement,
};
pub use self::url::{is_mssql_url, parse_config};
use crate::store::{
    ClassCount, CountsQuery, Cursor, HistoryQuery, ResultStore, ReviewQuery, StationSummary, StoreError, StoredBaseline, bucket_start,
    codes_json, expectation_of,
};

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
        schema::migrate(&store.pool).await?;
        Ok(store)
    }

    pub fn pool(&self) -> &TdsPool {
        &self.pool
    }
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

    async fn drift_baselines(&self) -> Result<Vec<StoredBaseline>, StoreError> {
        let rows = self.all_rows(sql::SELECT_BASELINES_ORDERED).await?;
        rows.iter().map(|r| baseline_of(r).map_err(query_err)).collect()
    }

    async fn put_drift_baseline(&self, b: &StoredBaseline) -> Result<StoredBaseline, StoreError> {
        let mut conn = self.pool.get().await.map_err(pool_err)?;
        let mut q = Query::new(sql::PUT_BASELINE_SQL);
        q.bind(b.model.clone());
        q.bind(b.version.clone());
        q.bind(b.station.clone());
        q.bind(b.profile.clone());
        q.bind(b.set_at);
        q.execute(&mut conn).await.map_err(query_err)?;
        let mut q = Query::new(format!("{} WHERE model = @P1 AND version = @P2 AND station = @P3", sql::SELECT_BASELINE_SQL));
        q.bind(b.model.clone());
        q.bind(b.version.clone());
        q.bind(b.station.clone());
        let row = async { q.query(&mut conn).await?.into_row().await }.await.map_err(query_err)?;
        let row = row.ok_or_else(|| StoreError::Query("the drift baseline just stored is not there".into()))?;
        baseline_of(&row).map_err(query_err)
    }
}

fn baseline_of(r: &Row) -> Result<StoredBaseline, tiberius::error::Error> {
    Ok(StoredBaseline {
        model: text(r, "model")?,
        version: text(r, "version")?,
        station: text(r, "station")?,
        profile: text(r, "profile")?,
        set_at: naive_utc(r, "set_at")?.ok_or_else(|| tiberius::error::Error::Conversion("set_at is NULL".into()))?,
    })
}
