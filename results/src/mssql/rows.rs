//! Reading and writing rows: tiberius rows mapped to frames, detections,
//! decisions and reviews; loading the frames a query selects with what belongs to
//! them; writing a batch in chunks inside one transaction.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDateTime, Utc};
use tiberius::{Query, Row};
use uuid::Uuid;
use visionq_contract::decision::{Decision, Outcome, Review, Verdict};
use visionq_contract::message::ImageSize;
use visionq_contract::{Detection, FrameResult, ModelInfo, ResultStatus};

use super::pool::{TdsClient, run};
use super::sql::{
    DETECTION_COLUMNS, FRAME_COLUMNS, MAX_PARAMS, decisions_of_sql, detections_of_sql, insert_decisions_sql, insert_detections_sql,
    insert_frames_sql, merge_stations_sql, reviews_of_sql, rows_per_statement,
};
use crate::store::{DECISION_COLUMNS, HistoryQuery, distinct, keep_detection};

pub(super) fn naive_utc(r: &Row, col: &str) -> Result<Option<DateTime<Utc>>, tiberius::error::Error> {
    Ok(r.try_get::<NaiveDateTime, _>(col)?.map(|t| t.and_utc()))
}

/// An integer column, `bigint` or `int` (what an expression yields can differ by server).
pub(super) fn int(r: &Row, col: &str) -> Result<i64, tiberius::error::Error> {
    match r.try_get::<i64, _>(col) {
        Ok(v) => Ok(v.unwrap_or_default()),
        Err(_) => Ok(r.try_get::<i32, _>(col)?.map(i64::from).unwrap_or_default()),
    }
}

pub(super) fn text(r: &Row, col: &str) -> Result<String, tiberius::error::Error> {
    Ok(r.try_get::<&str, _>(col)?.unwrap_or_default().to_string())
}

pub(super) fn frame_of(r: &Row) -> Result<FrameResult, tiberius::error::Error> {
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
        batch_size: r.try_get::<i32, _>("batch_size")?.map(|b| b as u32),
        captured_at: naive_utc(r, "captured_at")?,
        received_at: naive_utc(r, "received_at")?.ok_or_else(|| missing("received_at"))?,
        completed_at: naive_utc(r, "completed_at")?.ok_or_else(|| missing("completed_at"))?,
    })
}

pub(super) fn decision_of(r: &Row) -> Result<(Uuid, Decision), tiberius::error::Error> {
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

pub(super) fn review_of(r: &Row) -> Result<(Uuid, Review), tiberius::error::Error> {
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

pub(super) fn detection_of(r: &Row) -> Result<(Uuid, Detection), tiberius::error::Error> {
    let f = |c: &str| -> Result<f32, tiberius::error::Error> { Ok(r.try_get::<f32, _>(c)?.unwrap_or_default()) };
    let mut d = Detection {
        class_id: r.try_get::<i32, _>("class_id")?.unwrap_or_default() as u32,
        class_name: text(r, "class_name")?,
        score: f("score")?,
        bbox: [f("x1")?, f("y1")?, f("x2")?, f("y2")?],
        box_px: [f("x1_px")?, f("y1_px")?, f("x2_px")?, f("y2_px")?],
        track_id: None,
        classification: None,
        text: None,
    };
    visionq_contract::chain::restore(&mut d, r.try_get::<&str, _>("chain")?);
    Ok((r.try_get::<Uuid, _>("frame_id")?.unwrap_or_default(), d))
}

/// Reads the frames a query selects, with their detections (filtered for history).
pub(super) async fn load(
    conn: &mut TdsClient,
    frames: Query<'_>,
    hq: Option<&HistoryQuery>,
) -> Result<Vec<FrameResult>, tiberius::error::Error> {
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

pub(super) async fn write(conn: &mut TdsClient, results: &[FrameResult]) -> Result<usize, tiberius::error::Error> {
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
            q.bind(r.batch_size.map(|b| b as i32));
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
            q.bind(visionq_contract::chain::stored(d));
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
