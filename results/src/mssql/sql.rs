//! The T-SQL text the store runs: the columns it writes, the parameter limit per
//! statement, and the builders for every insert, merge and read (numbered `@Pn`
//! parameters, documented where they are built).

use crate::store::{DECISION_COLUMNS, REVIEW_COLUMNS};

/// Parameters per statement (SQL Server's limit is 2100).
pub const MAX_PARAMS: usize = 2000;
/// Columns written per frame and per detection.
pub const FRAME_COLUMNS: [&str; 14] = [
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
    "batch_size",
];
pub const DETECTION_COLUMNS: [&str; 14] =
    ["frame_id", "idx", "class_id", "class_name", "score", "x1", "y1", "x2", "y2", "x1_px", "y1_px", "x2_px", "y2_px", "chain"];

/// `@P{first}, …, @P{first + n - 1}`.
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("@P{i}")).collect::<Vec<_>>().join(", ")
}

/// `(@P1, …, @P13), (@P14, …)` for `rows` rows of `cols` parameters.
pub(super) fn values_rows(rows: usize, cols: usize) -> String {
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

/// Stores a drift baseline unless one is stored for its key.
pub const PUT_BASELINE_SQL: &str = "MERGE drift_baselines WITH (HOLDLOCK) AS d
     USING (VALUES (@P1, @P2, @P3, @P4, @P5)) AS n (model, version, station, profile, set_at)
     ON d.model = n.model AND d.version = n.version AND d.station = n.station
     WHEN NOT MATCHED THEN INSERT (model, version, station, profile, set_at)
         VALUES (n.model, n.version, n.station, n.profile, n.set_at);";

pub const SELECT_BASELINE_SQL: &str = "SELECT model, version, station, profile, set_at FROM drift_baselines";
pub const SELECT_BASELINES_ORDERED: &str =
    "SELECT model, version, station, profile, set_at FROM drift_baselines ORDER BY model, version, station";

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

pub(super) const SELECT_FRAME: &str = "SELECT frame_id, station, status, error, width, height, model_name, model_version, timings_ms, \
                            captured_at, received_at, completed_at, batch_size FROM frames f";

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
        "SELECT frame_id, class_id, class_name, score, x1, y1, x2, y2, x1_px, y1_px, x2_px, y2_px, chain
         FROM detections WHERE frame_id IN ({}) ORDER BY frame_id, idx",
        placeholders(1, frames)
    )
}

/// Every station seen, its frame count and latest frame's status.
pub const STATIONS_SQL: &str = "SELECT s.station, s.last_seen_at,
        (SELECT COUNT_BIG(*) FROM frames f WHERE f.station = s.station) AS n,
        (SELECT TOP (1) f.status FROM frames f WHERE f.station = s.station ORDER BY f.received_at DESC, f.frame_id DESC) AS last_status
     FROM stations s ORDER BY s.station";

/// @P1 station, @P2 interval (s), @P3 since, @P4 until, @P5 min score. Seconds since
/// the epoch from days and seconds-of-day: `DATEDIFF(SECOND, …)` alone overflows in 2038.
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
        assert_eq!(p, (1..=rows * 14).collect::<Vec<_>>());
        assert!(sql.contains("WITH (UPDLOCK, HOLDLOCK)"), "{sql}");
        assert!(sql.contains("OUTPUT inserted.frame_id"));
        assert_eq!(insert_frames_sql(2).matches('(').count(), insert_frames_sql(2).matches(')').count());
        assert!(insert_frames_sql(1).contains("(@P1, @P2, @P3, @P4, @P5, @P6, @P7, @P8, @P9, @P10, @P11, @P12, @P13, @P14)"));
    }

    #[test]
    fn detection_insert_and_station_merge() {
        let sql = insert_detections_sql(2);
        assert!(sql.starts_with("INSERT INTO detections (frame_id, idx, class_id, class_name, score, x1"));
        assert!(sql.ends_with("(@P15, @P16, @P17, @P18, @P19, @P20, @P21, @P22, @P23, @P24, @P25, @P26, @P27, @P28)"));
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
        assert_eq!(params_in(PUT_BASELINE_SQL), vec![1, 2, 3, 4, 5]);
        assert!(PUT_BASELINE_SQL.trim_end().ends_with(';'), "MERGE must end with a semicolon");
    }
}
