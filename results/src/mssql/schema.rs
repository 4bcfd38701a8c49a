//! The T-SQL schema: versioned migrations, applied in order, each once, by the
//! crate's runner ([`crate::migrate`]) under an application lock.

use tiberius::Query;

use super::pool::{TdsClient, TdsPool, pool_err, run, settle};
use crate::store::StoreError;

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
    (
        5,
        // Frames in the forward pass that ran the frame (a result's `batch_size`;
        // before, a key of `timings_ms`). NULL for frames not run and older rows.
        "ALTER TABLE frames ADD batch_size INT NULL;",
    ),
    (
        6,
        // Each model version's drift baseline at each station (`drift`).
        "CREATE TABLE drift_baselines (
            model NVARCHAR(256) NOT NULL,
            version NVARCHAR(256) NOT NULL,
            station NVARCHAR(64) NOT NULL,
            profile NVARCHAR(MAX) NOT NULL,
            set_at DATETIME2(7) NOT NULL,
            CONSTRAINT pk_drift_baselines PRIMARY KEY (model, version, station)
        );",
    ),
    (
        7,
        // What model chains added to a detection (`classification`, `text`) as JSON;
        // NULL where none did (issue 22).
        "ALTER TABLE detections ADD chain NVARCHAR(MAX) NULL;",
    ),
];

/// SQL Server's side of the migration runner, on the migrating transaction.
struct Migrations<'a>(&'a mut TdsClient);

impl crate::migrate::Dialect for Migrations<'_> {
    type Error = tiberius::error::Error;
    const STEPS: &'static [(i32, &'static str)] = MIGRATIONS;

    async fn applied(&mut self) -> Result<Vec<i32>, tiberius::error::Error> {
        Ok(self
            .0
            .simple_query("SELECT version FROM visionq_migrations")
            .await?
            .into_first_result()
            .await?
            .iter()
            .filter_map(|r| r.get::<i32, _>(0))
            .collect())
    }

    async fn apply(&mut self, sql: &str) -> Result<(), tiberius::error::Error> {
        run(self.0, sql).await
    }

    async fn record(&mut self, version: i32) -> Result<(), tiberius::error::Error> {
        let mut q = Query::new("INSERT INTO visionq_migrations (version) VALUES (@P1)");
        q.bind(version);
        q.execute(self.0).await?;
        Ok(())
    }
}

/// Brings the schema up to date in one transaction, holding an application lock so
/// that one replica migrates at a time; on failure it rolls back.
pub(super) async fn migrate(pool: &TdsPool) -> Result<(), StoreError> {
    let mut conn = pool.get().await.map_err(pool_err)?;
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
        for version in crate::migrate::run(&mut Migrations(&mut conn)).await? {
            tracing::info!(version, "applied SQL Server migration");
        }
        run(&mut conn, "COMMIT").await
    }
    .await;
    settle(conn, result).await
}
#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::mssql::sql::{DETECTION_COLUMNS, FRAME_COLUMNS};
    use crate::store::{DECISION_COLUMNS, REVIEW_COLUMNS};

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
            // Columns added later: `ALTER TABLE t ADD [COLUMN] name …`.
            let mut rest = *sql;
            while let Some(i) = rest.find("ALTER TABLE ") {
                rest = &rest[i + 12..];
                let mut words = rest.split_whitespace().filter(|w| !w.eq_ignore_ascii_case("COLUMN"));
                let (table, add, column) = (words.next().unwrap(), words.next().unwrap(), words.next().unwrap());
                assert!(add.eq_ignore_ascii_case("ADD"), "only ADD is parsed: {sql}");
                let names: &mut Vec<String> = tables.get_mut(table).expect("a table created earlier");
                names.push(column.to_string());
                names.sort();
            }
        }
        tables
    }

    #[test]
    fn one_logical_schema_in_every_dialect() {
        let ms = schema(MIGRATIONS);
        assert_eq!(
            ms.keys().collect::<Vec<_>>(),
            vec!["decisions", "detections", "drift_baselines", "expectations", "frames", "reviews", "stations"]
        );
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
}
