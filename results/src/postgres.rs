//! PostgreSQL through tokio-postgres and a deadpool pool. One transaction per
//! batch: frames by `INSERT … SELECT FROM UNNEST … ON CONFLICT DO NOTHING
//! RETURNING`, then the detections of the frames that were new.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use uuid::Uuid;
use visionq_contract::decision::{Decision, Expectation, Review};
use visionq_contract::message::ImageSize;
use visionq_contract::{Detection, FrameResult, ModelInfo, ResultStatus};

use crate::store::{
    ClassCount, CountsQuery, DECISION_COLUMNS, HistoryQuery, REVIEW_BACKLOG_SQL, REVIEW_COLUMNS, ResultStore, ReviewQuery,
    StationSummary, StoreError, StoredBaseline, bucket_start, distinct, expectation_of, keep_detection, outcome_of, verdict_of,
};

/// Versioned migrations, applied in order, each once.
pub(crate) const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE frames (
        frame_id uuid PRIMARY KEY,
        station text NOT NULL,
        status text NOT NULL,
        error text,
        width integer NOT NULL,
        height integer NOT NULL,
        model_name text NOT NULL,
        model_version text NOT NULL,
        timings_ms jsonb NOT NULL,
        detection_count integer NOT NULL,
        captured_at timestamptz,
        received_at timestamptz NOT NULL,
        completed_at timestamptz NOT NULL,
        stored_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX frames_station_received ON frames (station, received_at DESC);
    CREATE TABLE detections (
        frame_id uuid NOT NULL REFERENCES frames (frame_id) ON DELETE CASCADE,
        idx integer NOT NULL,
        class_id integer NOT NULL,
        class_name text NOT NULL,
        score real NOT NULL,
        x1 real NOT NULL, y1 real NOT NULL, x2 real NOT NULL, y2 real NOT NULL,
        x1_px real NOT NULL, y1_px real NOT NULL, x2_px real NOT NULL, y2_px real NOT NULL,
        PRIMARY KEY (frame_id, idx)
    );",
    ),
    (
        2,
        "CREATE TABLE stations (
            station text PRIMARY KEY,
            first_seen_at timestamptz NOT NULL,
            last_seen_at timestamptz NOT NULL
        );
        INSERT INTO stations (station, first_seen_at, last_seen_at)
            SELECT station, min(received_at), max(received_at) FROM frames GROUP BY station;
        CREATE INDEX frames_received ON frames (received_at);",
    ),
    (
        3,
        "CREATE TABLE decisions (
            frame_id uuid PRIMARY KEY REFERENCES frames (frame_id) ON DELETE CASCADE,
            outcome text NOT NULL,
            code text,
            class_name text,
            score real,
            similarity real,
            expectation_ref text,
            rule text NOT NULL,
            reason text NOT NULL
        );
        CREATE INDEX decisions_outcome ON decisions (outcome);
        CREATE TABLE expectations (
            station text PRIMARY KEY,
            reference text NOT NULL,
            codes jsonb NOT NULL,
            updated_at timestamptz NOT NULL
        );",
    ),
    (
        4,
        "CREATE TABLE reviews (
            frame_id uuid PRIMARY KEY REFERENCES frames (frame_id) ON DELETE CASCADE,
            verdict text NOT NULL,
            detection integer,
            class_name text,
            code text,
            reviewer text,
            reviewed_at timestamptz NOT NULL
        );",
    ),
    (
        5,
        // Frames in the forward pass that ran the frame (a result's `batch_size`;
        // before, a key of `timings_ms`). NULL for frames not run and older rows.
        "ALTER TABLE frames ADD COLUMN batch_size integer;",
    ),
    (
        6,
        // Each model version's drift baseline at each station (`drift`).
        "CREATE TABLE drift_baselines (
            model text NOT NULL,
            version text NOT NULL,
            station text NOT NULL,
            profile text NOT NULL,
            set_at timestamptz NOT NULL,
            PRIMARY KEY (model, version, station)
        );",
    ),
    (
        7,
        // What model chains added to a detection (`classification`, `text`) as JSON;
        // NULL where none did (issue 22).
        "ALTER TABLE detections ADD COLUMN chain text;",
    ),
];

/// PostgreSQL's side of the migration runner, on the migrating transaction.
struct Migrations<'a, 't>(&'a tokio_postgres::Transaction<'t>);

impl crate::migrate::Dialect for Migrations<'_, '_> {
    type Error = tokio_postgres::Error;
    const STEPS: &'static [(i32, &'static str)] = MIGRATIONS;

    async fn applied(&mut self) -> Result<Vec<i32>, tokio_postgres::Error> {
        Ok(self.0.query("SELECT version FROM visionq_migrations", &[]).await?.iter().map(|r| r.get(0)).collect())
    }

    async fn apply(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.0.batch_execute(sql).await
    }

    async fn record(&mut self, version: i32) -> Result<(), tokio_postgres::Error> {
        self.0.execute("INSERT INTO visionq_migrations (version) VALUES ($1)", &[&version]).await.map(|_| ())
    }
}

pub struct PgStore {
    pool: Pool,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn query_err(e: tokio_postgres::Error) -> StoreError {
    // A closed connection is an outage, not a bad query.
    if e.is_closed() || e.code().is_none() { StoreError::Unavailable(e.to_string()) } else { StoreError::Query(e.to_string()) }
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        // TLS as the URL's `sslmode` asks (crate::pg_tls).
        let connect = crate::pg_tls::parse(url)?;
        let manager = Manager::from_config(connect.config, connect.tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(8)
            .wait_timeout(Some(std::time::Duration::from_secs(5)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(unavailable)?;
        let store = PgStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(query_err)?;
        // One migrator at a time across replicas.
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(7420001);
             CREATE TABLE IF NOT EXISTS visionq_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());",
        )
        .await
        .map_err(query_err)?;
        for version in crate::migrate::run(&mut Migrations(&tx)).await.map_err(query_err)? {
            tracing::info!(version, "applied PostgreSQL migration");
        }
        tx.commit().await.map_err(query_err)
    }

    async fn load(
        &self,
        client: &deadpool_postgres::Client,
        rows: Vec<tokio_postgres::Row>,
        q: Option<&HistoryQuery>,
    ) -> Result<Vec<FrameResult>, StoreError> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.get("frame_id")).collect();
        let dets = client
            .query(
                "SELECT frame_id, class_id, class_name, score, x1, y1, x2, y2, x1_px, y1_px, x2_px, y2_px, chain
                 FROM detections WHERE frame_id = ANY($1) ORDER BY frame_id, idx",
                &[&ids],
            )
            .await
            .map_err(query_err)?;
        let mut by_frame: std::collections::HashMap<Uuid, Vec<Detection>> = Default::default();
        for d in dets {
            let mut det = Detection {
                class_id: d.get::<_, i32>("class_id") as u32,
                class_name: d.get("class_name"),
                score: d.get("score"),
                bbox: [d.get("x1"), d.get("y1"), d.get("x2"), d.get("y2")],
                box_px: [d.get("x1_px"), d.get("y1_px"), d.get("x2_px"), d.get("y2_px")],
                track_id: None,
                classification: None,
                text: None,
            };
            visionq_contract::chain::restore(&mut det, d.get::<_, Option<&str>>("chain"));
            if q.is_none_or(|q| keep_detection(q, &det.class_name, det.score)) {
                by_frame.entry(d.get("frame_id")).or_default().push(det);
            }
        }
        let xs = client
            .query(&format!("SELECT frame_id, {} FROM decisions WHERE frame_id = ANY($1)", DECISION_COLUMNS.join(", ")), &[&ids])
            .await
            .map_err(query_err)?;
        let mut decisions: std::collections::HashMap<Uuid, Decision> = Default::default();
        for x in xs {
            let decision = Decision {
                outcome: outcome_of(x.get("outcome"))?,
                code: x.get("code"),
                class_name: x.get("class_name"),
                score: x.get("score"),
                similarity: x.get("similarity"),
                expectation_ref: x.get("expectation_ref"),
                rule: x.get("rule"),
                reason: x.get("reason"),
            };
            decisions.insert(x.get("frame_id"), decision);
        }
        let rs = client
            .query(&format!("SELECT frame_id, {} FROM reviews WHERE frame_id = ANY($1)", REVIEW_COLUMNS.join(", ")), &[&ids])
            .await
            .map_err(query_err)?;
        let mut reviews: std::collections::HashMap<Uuid, Review> = Default::default();
        for x in rs {
            let review = Review {
                verdict: verdict_of(x.get("verdict"))?,
                detection: x.get::<_, Option<i32>>("detection").map(|i| i as usize),
                class_name: x.get("class_name"),
                code: x.get("code"),
                reviewer: x.get("reviewer"),
                reviewed_at: Some(x.get("reviewed_at")),
            };
            reviews.insert(x.get("frame_id"), review);
        }
        rows.into_iter()
            .map(|r| {
                let frame_id: Uuid = r.get("frame_id");
                let status: String = r.get("status");
                Ok(FrameResult {
                    frame_id,
                    station: r.get("station"),
                    status: ResultStatus::parse(&status).ok_or_else(|| StoreError::Query(format!("bad status {status}")))?,
                    error: r.get("error"),
                    image: ImageSize { width: r.get::<_, i32>("width") as u32, height: r.get::<_, i32>("height") as u32 },
                    model: ModelInfo { name: r.get("model_name"), version: r.get("model_version") },
                    detections: by_frame.remove(&frame_id).unwrap_or_default(),
                    decision: decisions.remove(&frame_id),
                    review: reviews.remove(&frame_id),
                    timings_ms: serde_json::from_value(r.get("timings_ms")).unwrap_or_default(),
                    batch_size: r.get::<_, Option<i32>>("batch_size").map(|b| b as u32),
                    captured_at: r.get("captured_at"),
                    received_at: r.get("received_at"),
                    completed_at: r.get("completed_at"),
                })
            })
            .collect()
    }
}

const FRAME_COLUMNS: &str = "frame_id, station, status, error, width, height, model_name, model_version, timings_ms, captured_at, \
                             received_at, completed_at, batch_size";

#[async_trait::async_trait]
impl ResultStore for PgStore {
    async fn write_batch(&self, results: &[FrameResult]) -> Result<usize, StoreError> {
        if results.is_empty() {
            return Ok(0);
        }
        let results = distinct(results);
        let mut client = self.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(query_err)?;
        let col = |f: fn(&FrameResult) -> String| results.iter().map(|r| f(r)).collect::<Vec<String>>();
        let ids: Vec<Uuid> = results.iter().map(|r| r.frame_id).collect();
        let stations = col(|r| r.station.clone());
        let statuses = col(|r| r.status.as_str().to_string());
        let errors: Vec<Option<String>> = results.iter().map(|r| r.error.clone()).collect();
        let widths: Vec<i32> = results.iter().map(|r| r.image.width as i32).collect();
        let heights: Vec<i32> = results.iter().map(|r| r.image.height as i32).collect();
        let model_names = col(|r| r.model.name.clone());
        let model_versions = col(|r| r.model.version.clone());
        let timings: Vec<serde_json::Value> =
            results.iter().map(|r| serde_json::to_value(&r.timings_ms).expect("timings serialise")).collect();
        let counts: Vec<i32> = results.iter().map(|r| r.detections.len() as i32).collect();
        let captured: Vec<Option<DateTime<Utc>>> = results.iter().map(|r| r.captured_at).collect();
        let received: Vec<DateTime<Utc>> = results.iter().map(|r| r.received_at).collect();
        let completed: Vec<DateTime<Utc>> = results.iter().map(|r| r.completed_at).collect();
        let batch_sizes: Vec<Option<i32>> = results.iter().map(|r| r.batch_size.map(|b| b as i32)).collect();
        let inserted = tx
            .query(
                "INSERT INTO frames (frame_id, station, status, error, width, height, model_name, model_version,
                                     timings_ms, detection_count, captured_at, received_at, completed_at, batch_size)
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int4[],
                                      $7::text[], $8::text[], $9::jsonb[], $10::int4[], $11::timestamptz[],
                                      $12::timestamptz[], $13::timestamptz[], $14::int4[])
                 ON CONFLICT (frame_id) DO NOTHING
                 RETURNING frame_id",
                &[
                    &ids,
                    &stations,
                    &statuses,
                    &errors,
                    &widths,
                    &heights,
                    &model_names,
                    &model_versions,
                    &timings,
                    &counts,
                    &captured,
                    &received,
                    &completed,
                    &batch_sizes,
                ],
            )
            .await
            .map_err(query_err)?;
        let new: HashSet<Uuid> = inserted.iter().map(|r| r.get(0)).collect();
        // Rows locked in station order, so concurrent writers cannot deadlock.
        tx.execute(
            "INSERT INTO stations (station, first_seen_at, last_seen_at)
             SELECT station, min(received_at), max(received_at) FROM UNNEST($1::text[], $2::timestamptz[]) AS t(station, received_at)
             GROUP BY station ORDER BY station
             ON CONFLICT (station) DO UPDATE SET
                 first_seen_at = LEAST(stations.first_seen_at, EXCLUDED.first_seen_at),
                 last_seen_at = GREATEST(stations.last_seen_at, EXCLUDED.last_seen_at)",
            &[&stations, &received],
        )
        .await
        .map_err(query_err)?;
        let mut d_frame = Vec::new();
        let mut d_idx = Vec::new();
        let mut d_class = Vec::new();
        let mut d_name = Vec::new();
        let mut d_score = Vec::new();
        let mut d_box: [Vec<f32>; 8] = Default::default();
        let mut d_chain: Vec<Option<String>> = Vec::new();
        for r in results.iter().filter(|r| new.contains(&r.frame_id)) {
            for (i, d) in r.detections.iter().enumerate() {
                d_frame.push(r.frame_id);
                d_idx.push(i as i32);
                d_class.push(d.class_id as i32);
                d_name.push(d.class_name.clone());
                d_score.push(d.score);
                d_chain.push(visionq_contract::chain::stored(d));
                for k in 0..4 {
                    d_box[k].push(d.bbox[k]);
                    d_box[k + 4].push(d.box_px[k]);
                }
            }
        }
        if !d_frame.is_empty() {
            tx.execute(
                "INSERT INTO detections (frame_id, idx, class_id, class_name, score, x1, y1, x2, y2, x1_px, y1_px, x2_px, y2_px, chain)
                 SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::int4[], $4::text[], $5::float4[], $6::float4[],
                                      $7::float4[], $8::float4[], $9::float4[], $10::float4[], $11::float4[],
                                      $12::float4[], $13::float4[], $14::text[])",
                &[
                    &d_frame, &d_idx, &d_class, &d_name, &d_score, &d_box[0], &d_box[1], &d_box[2], &d_box[3], &d_box[4], &d_box[5],
                    &d_box[6], &d_box[7], &d_chain,
                ],
            )
            .await
            .map_err(query_err)?;
        }
        let decided: Vec<(Uuid, &Decision)> = results
            .iter()
            .filter(|r| new.contains(&r.frame_id))
            .filter_map(|r| r.decision.as_ref().map(|d| (r.frame_id, d)))
            .collect();
        if !decided.is_empty() {
            let x_frame: Vec<Uuid> = decided.iter().map(|(id, _)| *id).collect();
            let x_outcome: Vec<&str> = decided.iter().map(|(_, d)| d.outcome.as_str()).collect();
            let x_code: Vec<Option<&str>> = decided.iter().map(|(_, d)| d.code.as_deref()).collect();
            let x_class: Vec<Option<&str>> = decided.iter().map(|(_, d)| d.class_name.as_deref()).collect();
            let x_score: Vec<Option<f32>> = decided.iter().map(|(_, d)| d.score).collect();
            let x_similarity: Vec<Option<f32>> = decided.iter().map(|(_, d)| d.similarity).collect();
            let x_ref: Vec<Option<&str>> = decided.iter().map(|(_, d)| d.expectation_ref.as_deref()).collect();
            let x_rule: Vec<&str> = decided.iter().map(|(_, d)| d.rule.as_str()).collect();
            let x_reason: Vec<&str> = decided.iter().map(|(_, d)| d.reason.as_str()).collect();
            tx.execute(
                &format!(
                    "INSERT INTO decisions (frame_id, {})
                     SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::float4[], $6::float4[],
                                          $7::text[], $8::text[], $9::text[])",
                    DECISION_COLUMNS.join(", ")
                ),
                &[&x_frame, &x_outcome, &x_code, &x_class, &x_score, &x_similarity, &x_ref, &x_rule, &x_reason],
            )
            .await
            .map_err(query_err)?;
        }
        tx.commit().await.map_err(query_err)?;
        Ok(new.len())
    }

    async fn get(&self, frame_id: Uuid) -> Result<Option<FrameResult>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows =
            client.query(&format!("SELECT {FRAME_COLUMNS} FROM frames WHERE frame_id = $1"), &[&frame_id]).await.map_err(query_err)?;
        Ok(self.load(&client, rows, None).await?.pop())
    }

    async fn history(&self, q: &HistoryQuery) -> Result<Vec<FrameResult>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let filter_detections = q.class.is_some() || q.min_score.is_some();
        let rows = client
            .query(
                &format!(
                    "SELECT {FRAME_COLUMNS} FROM frames f
                     WHERE station = $1
                       AND ($2::timestamptz IS NULL OR received_at >= $2)
                       AND ($3::timestamptz IS NULL OR received_at < $3)
                       AND (NOT $4 OR EXISTS (SELECT 1 FROM detections d WHERE d.frame_id = f.frame_id
                            AND ($5::text IS NULL OR d.class_name = $5) AND ($6::float4 IS NULL OR d.score >= $6)))
                       AND ($8::timestamptz IS NULL OR (received_at, frame_id) < ($8, $9::uuid))
                       AND ($10::text IS NULL OR EXISTS (SELECT 1 FROM decisions x WHERE x.frame_id = f.frame_id AND x.outcome = $10))
                     ORDER BY received_at DESC, frame_id DESC LIMIT $7"
                ),
                &[
                    &q.station,
                    &q.since,
                    &q.until,
                    &filter_detections,
                    &q.class,
                    &q.min_score,
                    &(q.limit as i64),
                    &q.before.map(|c| c.received_at),
                    &q.before.map(|c| c.frame_id),
                    &q.outcome.map(|o| o.as_str()),
                ],
            )
            .await
            .map_err(query_err)?;
        self.load(&client, rows, Some(q)).await
    }

    async fn counts(&self, q: &CountsQuery) -> Result<Vec<ClassCount>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                "SELECT floor(extract(epoch FROM f.received_at) / $2::int8)::int8 AS bucket, d.class_id, d.class_name, count(*) AS n
                 FROM frames f JOIN detections d ON d.frame_id = f.frame_id
                 WHERE f.station = $1 AND f.received_at >= $3 AND f.received_at < $4
                   AND ($5::float4 IS NULL OR d.score >= $5)
                 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
                &[&q.station, &q.interval_s, &q.since, &q.until, &q.min_score],
            )
            .await
            .map_err(query_err)?;
        Ok(rows
            .iter()
            .map(|r| ClassCount {
                bucket: bucket_start(r.get::<_, i64>("bucket") * q.interval_s, q.interval_s),
                class_id: r.get::<_, i32>("class_id") as u32,
                class_name: r.get("class_name"),
                count: r.get::<_, i64>("n") as u64,
            })
            .collect())
    }

    async fn stations(&self) -> Result<Vec<StationSummary>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client.query(crate::store::STATIONS_SQL, &[]).await.map_err(query_err)?;
        Ok(rows
            .iter()
            .map(|r| StationSummary {
                station: r.get("station"),
                last_frame_at: r.get("last_seen_at"),
                frames: r.get::<_, i64>("n") as u64,
                last_status: r.get::<_, Option<&str>>("last_status").and_then(ResultStatus::parse),
            })
            .collect())
    }

    async fn prune(&self, cutoff: DateTime<Utc>, max_frames: usize) -> Result<usize, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let n = client
            .execute(
                "DELETE FROM frames WHERE frame_id IN
                     (SELECT frame_id FROM frames WHERE received_at < $1 ORDER BY received_at LIMIT $2)",
                &[&cutoff, &(max_frames as i64)],
            )
            .await
            .map_err(query_err)?;
        Ok(n as usize)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let ping = async {
            let client = self.pool.get().await.map_err(unavailable)?;
            client.simple_query("SELECT 1").await.map_err(query_err)?;
            Ok(())
        };
        // Readiness probes time out in a second or two; answer before they do.
        tokio::time::timeout(crate::store::PING_TIMEOUT, ping).await.unwrap_or_else(|_| Err(crate::store::ping_timed_out()))
    }

    async fn review_backlog(&self) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let row = client.query_one(REVIEW_BACKLOG_SQL, &[]).await.map_err(query_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn review_queue(&self, rq: &ReviewQuery) -> Result<Vec<FrameResult>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let columns = FRAME_COLUMNS.split(", ").map(|c| format!("f.{c}")).collect::<Vec<_>>().join(", ");
        let rows = client
            .query(
                &format!(
                    "SELECT {columns} FROM frames f JOIN decisions x ON x.frame_id = f.frame_id
                     WHERE x.outcome = 'needs_review' AND NOT EXISTS (SELECT 1 FROM reviews r WHERE r.frame_id = f.frame_id)
                       AND ($1::text IS NULL OR f.station = $1)
                       AND ($2::timestamptz IS NULL OR (f.received_at, f.frame_id) > ($2, $3::uuid))
                     ORDER BY f.received_at, f.frame_id LIMIT $4"
                ),
                &[&rq.station, &rq.after.map(|c| c.received_at), &rq.after.map(|c| c.frame_id), &(rq.limit as i64)],
            )
            .await
            .map_err(query_err)?;
        self.load(&client, rows, None).await
    }

    async fn put_review(&self, frame_id: Uuid, review: &Review) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let n = client
            .execute(
                &format!(
                    "INSERT INTO reviews (frame_id, {}) SELECT $1, $2, $3, $4, $5, $6, $7
                     WHERE EXISTS (SELECT 1 FROM decisions WHERE frame_id = $1) ON CONFLICT (frame_id) DO NOTHING",
                    REVIEW_COLUMNS.join(", ")
                ),
                &[
                    &frame_id,
                    &review.verdict.as_str(),
                    &review.detection.map(|i| i as i32),
                    &review.class_name,
                    &review.code,
                    &review.reviewer,
                    &review.reviewed_at.unwrap_or_else(Utc::now),
                ],
            )
            .await
            .map_err(query_err)?;
        Ok(n == 1)
    }

    async fn expectations(&self) -> Result<Vec<(String, Expectation)>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query("SELECT station, reference, codes::text AS codes FROM expectations ORDER BY station", &[])
            .await
            .map_err(query_err)?;
        rows.iter().map(|r| Ok((r.get("station"), expectation_of(r.get("reference"), r.get("codes"))?))).collect()
    }

    async fn put_expectation(&self, station: &str, expectation: &Expectation) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "INSERT INTO expectations (station, reference, codes, updated_at) VALUES ($1, $2, $3::text::jsonb, now())
                 ON CONFLICT (station) DO UPDATE SET reference = EXCLUDED.reference, codes = EXCLUDED.codes, updated_at = EXCLUDED.updated_at",
                &[&station, &expectation.reference, &crate::store::codes_json(expectation)],
            )
            .await
            .map_err(query_err)?;
        Ok(())
    }

    async fn delete_expectation(&self, station: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        Ok(client.execute("DELETE FROM expectations WHERE station = $1", &[&station]).await.map_err(query_err)? > 0)
    }

    async fn drift_baselines(&self) -> Result<Vec<StoredBaseline>, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query("SELECT model, version, station, profile, set_at FROM drift_baselines ORDER BY model, version, station", &[])
            .await
            .map_err(query_err)?;
        Ok(rows.iter().map(baseline_of).collect())
    }

    async fn put_drift_baseline(&self, b: &StoredBaseline) -> Result<StoredBaseline, StoreError> {
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .execute(
                "INSERT INTO drift_baselines (model, version, station, profile, set_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (model, version, station) DO NOTHING",
                &[&b.model, &b.version, &b.station, &b.profile, &b.set_at],
            )
            .await
            .map_err(query_err)?;
        let row = client
            .query_one(
                "SELECT model, version, station, profile, set_at FROM drift_baselines WHERE model = $1 AND version = $2 AND station = $3",
                &[&b.model, &b.version, &b.station],
            )
            .await
            .map_err(query_err)?;
        Ok(baseline_of(&row))
    }
}

fn baseline_of(r: &tokio_postgres::Row) -> StoredBaseline {
    StoredBaseline {
        model: r.get("model"),
        version: r.get("version"),
        station: r.get("station"),
        profile: r.get("profile"),
        set_at: r.get("set_at"),
    }
}

/// The tests' fresh PostgreSQL databases (shared with `tests/`).
#[cfg(test)]
#[allow(dead_code)]
#[path = "../tests/common/pg.rs"]
mod test_pg;

#[cfg(test)]
mod tests {

    use super::test_pg as pg;
    use super::*;

    /// A database an older release left (the steps up to `old` applied and recorded,
    /// a frame and its station stored) is brought up to date when the store
    /// connects: the later tables exist and work, every version is recorded, the
    /// data stays.
    #[tokio::test]
    async fn an_older_schema_is_brought_up_to_date() {
        for old in 1..MIGRATIONS.len() {
            let db = pg::TestDb::new(&format!("upgrade{old}")).await;
            let client = db.client().await;
            client
                .batch_execute(
                    "CREATE TABLE visionq_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());",
                )
                .await
                .unwrap();
            for (version, sql) in &MIGRATIONS[..old] {
                client.batch_execute(sql).await.unwrap();
                client.execute("INSERT INTO visionq_migrations (version) VALUES ($1)", &[version]).await.unwrap();
            }
            let frame_id = Uuid::now_v7();
            client
                .execute(
                    "INSERT INTO frames (frame_id, station, status, width, height, model_name, model_version, timings_ms,
                                         detection_count, received_at, completed_at)
                     VALUES ($1, 'cam-old', 'ok', 640, 480, 'm', 'v1', '{}', 0, '2026-01-01T00:00:01Z', '2026-01-01T00:00:02Z')",
                    &[&frame_id],
                )
                .await
                .unwrap();
            if old >= 2 {
                client
                    .batch_execute("INSERT INTO stations VALUES ('cam-old', '2026-01-01T00:00:01Z', '2026-01-01T00:00:01Z')")
                    .await
                    .unwrap();
            }

            let store = PgStore::connect(&db.url).await.unwrap();
            let versions: Vec<i32> = client
                .query("SELECT version FROM visionq_migrations ORDER BY version", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let tables: Vec<String> = client
                .query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            crate::store::assert_upgraded(&store, MIGRATIONS, old, (&versions, &tables), frame_id).await;
            drop((store, client));
        }
    }
}
