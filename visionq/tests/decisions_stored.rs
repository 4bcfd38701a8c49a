//! Decisions kept and steered (issue 15), on the real model and real photos, in
//! SQLite (embedded) and PostgreSQL: each result's decision lands in the
//! `decisions` table once, comes back with the history and filters it
//! (`?outcome=`), the review backlog gauge counts the `needs_review` ones, and an
//! expectation set over the API (admin only, checked) turns what the photos show
//! into a `mismatch` carrying its reference — across a restart, until cleared.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const REVIEW: f64 = 0.3;
const ACCEPT: f64 = 0.7;
const STATION: &str = "dock-1";
const PHOTOS: [&str; 6] = ["dog.jpg", "eagle.jpg", "horses.jpg", "person.jpg", "scream.jpg", "bus.jpg"];

/// The outcome the thresholds give a result's detections (the best one at or above
/// `show` decides; no expectation).
fn expected_outcome(result: &Value) -> &'static str {
    let best = result["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["score"].as_f64().unwrap())
        .filter(|s| *s >= 0.25)
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
    match best {
        Some(s) if s >= ACCEPT => "accepted",
        Some(s) if s >= REVIEW => "needs_review",
        _ => "nothing",
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post_photo(&self, photo: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/v1/stations/{STATION}/frames?wait_ms=30000", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "image/jpeg")
            .body(photo_bytes(photo))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.json().await.unwrap()
    }
}

/// The decision rows of the database, by frame id: (outcome, code, class_name, expectation_ref).
type Rows = std::collections::BTreeMap<String, (String, Option<String>, Option<String>, Option<String>)>;

async fn decision_rows(db: Option<&TestDb>, sqlite: &std::path::Path) -> Rows {
    match db {
        Some(db) => {
            let client = db.client().await;
            client
                .query("SELECT frame_id::text, outcome, code, class_name, expectation_ref FROM decisions", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
                .collect()
        }
        None => {
            let conn = rusqlite::Connection::open_with_flags(sqlite, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            let mut stmt = conn.prepare("SELECT frame_id, outcome, code, class_name, expectation_ref FROM decisions").unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        }
    }
}

fn row_of(decision: &Value) -> (String, Option<String>, Option<String>, Option<String>) {
    let s = |k: &str| decision[k].as_str().map(str::to_string);
    (s("outcome").unwrap(), s("code"), s("class_name"), s("expectation_ref"))
}

async fn backlog(server: &Server) -> Option<f64> {
    let text = server.metrics().await;
    text.lines().find_map(|l| l.strip_prefix("visionq_review_backlog ")).and_then(|v| v.trim().parse().ok())
}

async fn decisions_are_stored_filtered_and_checked(db: Option<TestDb>) {
    let tag = if db.is_some() { "decisions-pg" } else { "decisions-sqlite" };
    let data = scratch(tag);
    let rules = data.join("rules.toml");
    std::fs::write(&rules, format!("thresholds = {{ review = {REVIEW}, accept = {ACCEPT} }}\n")).unwrap();
    let tokens = data.join("tokens.toml");
    let admin = new_token(&tokens, &["--scope", "admin"]);
    let operator = new_token(&tokens, &["--scope", "operator", "--name", "control-room"]);
    let reviewer = new_token(&tokens, &["--scope", "reviewer", "--name", "ana"]);
    let mut env = vec![
        ("VISIONQ_DATA_DIR", data.display().to_string()),
        ("VISIONQ_RULES_FILE", rules.display().to_string()),
        ("VISIONQ_TOKENS_FILE", tokens.display().to_string()),
    ];
    if let Some(db) = &db {
        env.push(("VISIONQ_DATABASE_URL", db.url.clone()));
    }
    let sqlite = data.join("visionq.db");
    let server = Server::start(&["run"], &env).await;
    let http = reqwest::Client::new();
    let admin = Client { http: http.clone(), base: server.base.clone(), token: admin };
    let operator = Client { http: http.clone(), base: server.base.clone(), token: operator };
    let reviewer = Client { http, base: server.base.clone(), token: reviewer };

    // Each photo's decision: in the reply, as the thresholds say, and once in the table.
    let mut replies = Vec::new();
    for photo in PHOTOS {
        let r = admin.post_photo(photo).await;
        assert_eq!(r["decision"]["outcome"], expected_outcome(&r), "{photo}: {}", r["decision"]);
        assert_eq!(r["decision"]["expectation_ref"], Value::Null);
        replies.push(r);
    }
    let outcomes: BTreeSet<&str> = replies.iter().map(|r| r["decision"]["outcome"].as_str().unwrap()).collect();
    assert!(
        outcomes.contains("accepted") && outcomes.contains("needs_review"),
        "the photos give both, so each filter has something to leave out and the backlog is not 0: {outcomes:?}"
    );
    let rows = decision_rows(db.as_ref(), &sqlite).await;
    assert_eq!(rows.len(), PHOTOS.len(), "one row per result: {rows:?}");
    for r in &replies {
        let id = r["frame_id"].as_str().unwrap();
        assert_eq!(rows.get(id), Some(&row_of(&r["decision"])), "{id}");
    }

    // The history carries each decision as replied; `?outcome=` keeps only those decided so.
    let (status, page) = admin.get(&format!("/v1/stations/{STATION}/results?limit=100")).await;
    assert_eq!(status, 200, "{page}");
    let stored = page["results"].as_array().unwrap();
    assert_eq!(stored.len(), PHOTOS.len());
    for r in &replies {
        let s = stored.iter().find(|s| s["frame_id"] == r["frame_id"]).unwrap();
        assert_eq!(s["decision"], r["decision"], "read back as decided");
    }
    for outcome in ["accepted", "needs_review", "nothing", "mismatch"] {
        let (status, page) = admin.get(&format!("/v1/stations/{STATION}/results?outcome={outcome}")).await;
        assert_eq!(status, 200, "{page}");
        let got: BTreeSet<&str> = page["results"].as_array().unwrap().iter().map(|r| r["frame_id"].as_str().unwrap()).collect();
        let want: BTreeSet<&str> =
            replies.iter().filter(|r| r["decision"]["outcome"] == outcome).map(|r| r["frame_id"].as_str().unwrap()).collect();
        assert_eq!(got, want, "?outcome={outcome}");
    }
    let (status, body) = admin.get(&format!("/v1/stations/{STATION}/results?outcome=approved")).await;
    assert_eq!((status, body["code"].as_str(), body["param"].as_str()), (400, Some("bad_parameter"), Some("outcome")), "{body}");

    // The backlog gauge counts the stored needs_review decisions.
    let needs_review = replies.iter().filter(|r| r["decision"]["outcome"] == "needs_review").count() as f64;
    let t0 = std::time::Instant::now();
    while backlog(&server).await != Some(needs_review) {
        assert!(t0.elapsed() < Duration::from_secs(20), "backlog {:?}, want {needs_review}", backlog(&server).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The review queue: the needs_review frames, oldest first, in pages.
    let queued: Vec<&Value> = replies.iter().filter(|r| r["decision"]["outcome"] == "needs_review").collect();
    let ids = |page: &Value| page["items"].as_array().unwrap().iter().map(|r| r["frame_id"].clone()).collect::<Vec<_>>();
    let (status, page) = operator.get(&format!("/v1/review?station={STATION}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), queued.iter().map(|r| r["frame_id"].clone()).collect::<Vec<_>>(), "oldest first");
    assert_eq!(page["items"][0]["detections"], queued[0]["detections"]);
    let (_, first) = operator.get(&format!("/v1/review?station={STATION}&limit=1")).await;
    assert_eq!(ids(&first), vec![queued[0]["frame_id"].clone()]);
    let (_, rest) = operator.get(&format!("/v1/review?station={STATION}&limit=100&after={}", first["next"].as_str().unwrap())).await;
    assert_eq!(ids(&rest).len(), queued.len() - 1, "the next page holds the rest: {rest}");
    for (query, param) in
        [("limit=0", "limit"), ("after=yesterday", "after"), ("station=bad%20id", "station"), ("colour=red", "colour")]
    {
        let (status, r) = operator.get(&format!("/v1/review?{query}")).await;
        assert_eq!((status, r["param"].as_str()), (400, Some(param)), "{query}: {r}");
    }

    // Reviews: a reviewer's (or an admin's), each checked against its frame, once.
    let target = queued[0]["frame_id"].as_str().unwrap().to_string();
    let review_path = format!("/v1/review/{target}");
    let body = |v: Value| Some(serde_json::to_vec(&v).unwrap());
    let (status, r) = operator.send(reqwest::Method::POST, &review_path, body(json!({"verdict": "confirmed"}))).await;
    assert_eq!((status, r["code"].as_str()), (403, Some("forbidden")), "operators read the queue, they do not review: {r}");
    for (bad, status, code) in [
        (json!({"verdict": "maybe"}), 400, "bad_review"),
        (json!({"verdict": "corrected"}), 400, "bad_review"),
        (json!({"verdict": "confirmed", "class_name": "cat"}), 400, "bad_review"),
        (json!({"verdict": "corrected", "class_name": "unicorn"}), 400, "unknown_class"),
        (json!({"verdict": "rejected", "detection": 99}), 400, "bad_detection"),
        (json!({"verdict": "rejected", "colour": "red"}), 400, "bad_review"),
    ] {
        let (s, r) = reviewer.send(reqwest::Method::POST, &review_path, body(bad.clone())).await;
        assert_eq!((s, r["code"].as_str()), (status, Some(code)), "{bad}: {r}");
    }
    let (s, r) = reviewer.send(reqwest::Method::POST, "/v1/review/not-a-frame", body(json!({"verdict": "confirmed"}))).await;
    assert_eq!((s, r["code"].as_str()), (400, Some("bad_frame_id")), "{r}");
    let unknown = format!("/v1/review/{}", uuid::Uuid::now_v7());
    let (s, r) = reviewer.send(reqwest::Method::POST, &unknown, body(json!({"verdict": "confirmed"}))).await;
    assert_eq!((s, r["code"].as_str()), (404, Some("not_found")), "{r}");
    let (status, r) = operator.get(&format!("/v1/frames/{target}")).await;
    assert!(status == 200 && r.get("review").is_none(), "refused reviews store nothing: {r}");
    let (s, reviewed) =
        reviewer.send(reqwest::Method::POST, &review_path, body(json!({"verdict": "corrected", "class_name": "cat"}))).await;
    assert_eq!(s, 200, "{reviewed}");
    let rv = &reviewed["review"];
    assert_eq!(
        (rv["verdict"].as_str(), rv["class_name"].as_str(), rv["code"].as_str()),
        (Some("corrected"), Some("cat"), Some("cat")),
        "{rv}"
    );
    assert_eq!(rv["reviewer"], "ana");
    assert_eq!(reviewed["decision"], queued[0]["decision"], "the decision stays as the machine made it");
    let (s, r) = admin.send(reqwest::Method::POST, &review_path, body(json!({"verdict": "rejected"}))).await;
    assert_eq!((s, r["code"].as_str()), (409, Some("already_reviewed")), "{r}");
    assert!(r["error"].as_str().unwrap().contains("ana"), "it says who reviewed: {r}");
    let (_, stored) = operator.get(&format!("/v1/frames/{target}")).await;
    assert_eq!(stored["review"], reviewed["review"], "the review is stored");
    let (_, page) = operator.get(&format!("/v1/review?station={STATION}")).await;
    assert!(!ids(&page).contains(&json!(target)), "a reviewed frame leaves the queue");
    let accepted = replies.iter().find(|r| r["decision"]["outcome"] == "accepted").unwrap()["frame_id"].as_str().unwrap();
    let (s, r) = admin.send(reqwest::Method::POST, &format!("/v1/review/{accepted}"), body(json!({"verdict": "rejected"}))).await;
    assert_eq!((s, r["review"]["reviewer"].as_str()), (200, Some("admin")), "an accepted frame may be reviewed too: {r}");
    let t0 = std::time::Instant::now();
    while backlog(&server).await != Some(needs_review - 1.0) {
        assert!(t0.elapsed() < Duration::from_secs(20), "backlog {:?}, want {}", backlog(&server).await, needs_review - 1.0);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let metrics = server.metrics().await;
    for verdict in ["corrected", "rejected"] {
        assert!(metrics.contains(&format!("visionq_reviews_total{{outcome=\"{verdict}\"}} 1")), "{verdict}: {metrics}");
    }

    // An expectation: admins only, checked, then decisions compare against it.
    let path = format!("/v1/stations/{STATION}/expectation");
    let note = json!({"reference": "DN-1042", "codes": [{"code": "PALLET-77", "quantity": 2}]});
    let body = |v: &Value| Some(serde_json::to_vec(v).unwrap());
    let (status, r) = operator.send(reqwest::Method::PUT, &path, body(&note)).await;
    assert_eq!((status, r["code"].as_str()), (403, Some("forbidden")), "operators read only: {r}");
    for (bad, field) in [
        (json!({"reference": "DN-1042", "codes": []}), "codes"),
        (json!({"reference": " ", "codes": [{"code": "A"}]}), "reference"),
        (json!({"reference": "DN-1042", "codes": [{"code": ""}]}), "codes"),
        (json!({"codes": [{"code": "A"}]}), "body"),
    ] {
        let (status, r) = admin.send(reqwest::Method::PUT, &path, body(&bad)).await;
        assert_eq!((status, r["code"].as_str(), r["param"].as_str()), (400, Some("bad_expectation"), Some(field)), "{bad}: {r}");
    }
    let (status, r) = admin.send(reqwest::Method::PUT, &path, Some(b"{not json".to_vec())).await;
    assert_eq!((status, r["code"].as_str()), (400, Some("bad_expectation")), "{r}");
    let (status, _) = admin.get(&path).await;
    assert_eq!(status, 404, "a refused body sets nothing");
    let (status, r) = admin.send(reqwest::Method::PUT, &path, body(&note)).await;
    assert_eq!((status, &r), (200, &note));
    let (status, r) = operator.get(&path).await;
    assert_eq!((status, &r), (200, &note), "operators read it");

    let mismatch = |r: &Value| {
        let d = &r["decision"];
        assert_eq!((d["outcome"].as_str(), d["expectation_ref"].as_str()), (Some("mismatch"), Some("DN-1042")), "{d}");
        assert!(d["reason"].as_str().unwrap().contains("PALLET-77"), "{d}");
    };
    let r = admin.post_photo("dog.jpg").await;
    mismatch(&r);
    let id = r["frame_id"].as_str().unwrap().to_string();
    let rows = decision_rows(db.as_ref(), &sqlite).await;
    assert_eq!(rows.get(&id).map(|x| (x.0.as_str(), x.3.as_deref())), Some(("mismatch", Some("DN-1042"))));
    let (_, page) = admin.get(&format!("/v1/stations/{STATION}/results?outcome=mismatch")).await;
    let ids: Vec<&str> = page["results"].as_array().unwrap().iter().map(|r| r["frame_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![id.as_str()]);
    // Another station is not bound by it.
    let other = admin
        .http
        .post(format!("{}/v1/stations/dock-2/frames?wait_ms=30000", admin.base))
        .bearer_auth(&admin.token)
        .header("content-type", "image/jpeg")
        .body(photo_bytes("dog.jpg"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(other["decision"]["expectation_ref"], Value::Null, "{}", other["decision"]);
    server.stop().await;

    // A restart keeps it (stored), and its decisions.
    let server = Server::start(&["run"], &env).await;
    let admin = Client { base: server.base.clone(), ..admin };
    let operator = Client { base: server.base.clone(), ..operator };
    let (status, r) = admin.get(&path).await;
    assert_eq!((status, &r), (200, &note), "the expectation survives a restart");
    let (_, stored) = operator.get(&format!("/v1/frames/{target}")).await;
    assert_eq!(stored["review"], reviewed["review"], "the review survives a restart");
    mismatch(&admin.post_photo("dog.jpg").await);

    // Cleared: decisions no longer compare.
    let (status, r) = operator.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 403, "{r}");
    let (status, _) = admin.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, 204);
    let (status, r) = admin.get(&path).await;
    assert_eq!((status, r["code"].as_str()), (404, Some("not_found")));
    let r = admin.post_photo("dog.jpg").await;
    assert_eq!(r["decision"]["outcome"], expected_outcome(&r), "{}", r["decision"]);
    assert_eq!(r["decision"]["expectation_ref"], Value::Null);
    assert_eq!(decision_rows(db.as_ref(), &sqlite).await.len(), PHOTOS.len() + 4, "one row per result, none doubled");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_in_sqlite_filter_the_history_and_follow_an_expectation() {
    decisions_are_stored_filtered_and_checked(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_in_postgresql_filter_the_history_and_follow_an_expectation() {
    decisions_are_stored_filtered_and_checked(Some(TestDb::new("decisions").await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rules_an_expectation_is_refused() {
    let server = Server::start(&["run"], &[]).await;
    let r = reqwest::Client::new()
        .put(server.url("/v1/stations/dock-1/expectation"))
        .json(&json!({"reference": "DN-1", "codes": [{"code": "A"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "decisions_off", "{body}");
    let r = reqwest::Client::new().get(server.url("/v1/review")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 409, "no review queue without rules");
    server.stop().await;
}
