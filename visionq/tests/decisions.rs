//! Decisions on real results (issue 15): a rules file maps the model's classes to
//! codes and bands scores into accepted / needs_review / nothing; the decision is in
//! the station's reply and counted in the metrics; bad rules stop the start with the
//! reason, and a SIGHUP reload takes new rules (a bad one keeps the old).

mod common;

use common::*;
use serde_json::Value;

/// The decision a result must get under thresholds (review, accept), given its
/// detections: the best detection at or above `show` decides.
fn expected_outcome(result: &Value, review: f64, accept: f64) -> (&'static str, Option<String>) {
    let best = result["detections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["score"].as_f64().unwrap() >= 0.25)
        .max_by(|a, b| a["score"].as_f64().unwrap().total_cmp(&b["score"].as_f64().unwrap()));
    match best {
        None => ("nothing", None),
        Some(d) => {
            let s = d["score"].as_f64().unwrap();
            let outcome = if s >= accept {
                "accepted"
            } else if s >= review {
                "needs_review"
            } else {
                "nothing"
            };
            (outcome, Some(d["class_name"].as_str().unwrap().to_string()))
        }
    }
}

async fn post(server: &Server, station: &str, photo: &str) -> Value {
    let (status, result) =
        post_jpeg(&reqwest::Client::new(), &server.url(&format!("/v1/stations/{station}/frames?wait_ms=30000")), photo_bytes(photo))
            .await;
    assert_eq!(status, 200, "{result}");
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_carry_the_decision_of_their_stations_rules_and_a_reload_changes_them() {
    let data = scratch("decisions");
    let rules = data.join("rules.toml");
    std::fs::write(
        &rules,
        r#"
        thresholds = { review = 0.3, accept = 0.95 }
        [rules.yard]
        thresholds = { accept = 0.5 }
        labels.explicit = { dog = "K9-01", bicycle = "BIKE-7", car = "CAR-2", truck = "TRK-3" }
        [station.yard-1]
        rules = "yard"
        [rules.picky]
        thresholds = { show = 0.45, review = 0.8, accept = 0.9 }
        [station.picky-1]
        rules = "picky"
        "#,
    )
    .unwrap();
    let env = [("VISIONQ_DATA_DIR", data.display().to_string()), ("VISIONQ_RULES_FILE", rules.display().to_string())];
    let server = Server::start(&["run"], &env).await;

    // A station with rules: explicit codes, its own accept threshold.
    let r = post(&server, "yard-1", "dog.jpg").await;
    let d = &r["decision"];
    let (outcome, class) = expected_outcome(&r, 0.3, 0.5);
    assert_eq!(d["outcome"], outcome, "{d}");
    assert_eq!(d["class_name"].as_str().map(str::to_string), class, "{d}");
    let codes = [("dog", "K9-01"), ("bicycle", "BIKE-7"), ("car", "CAR-2"), ("truck", "TRK-3")];
    let want = codes.iter().find(|(c, _)| Some(c.to_string()) == class).map(|(_, code)| *code);
    assert_eq!(d["code"].as_str(), want, "{d}");
    assert_eq!(d["rule"], "yard:explicit", "{d}");

    // A station without: the global thresholds, class names as codes.
    let r = post(&server, "gate-2", "dog.jpg").await;
    let (outcome, class) = expected_outcome(&r, 0.3, 0.95);
    assert_eq!(r["decision"]["outcome"], outcome, "{}", r["decision"]);
    assert_eq!(r["decision"]["code"].as_str().map(str::to_string), class);
    assert_eq!(r["decision"]["rule"], "builtin:normalised");

    let metrics = server.metrics().await;
    let decided: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("visionq_decisions_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(decided, 2.0, "{metrics}");

    // A station whose rules show only detections at 0.45 and above: the rest are not
    // in its reply, nor in what was stored.
    let all = post(&server, "gate-2", "dog.jpg").await;
    let shown = post(&server, "picky-1", "dog.jpg").await;
    let listed = |r: &Value| -> Vec<(String, f64)> {
        r["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["class_name"].as_str().unwrap().to_string(), d["score"].as_f64().unwrap()))
            .collect()
    };
    let (all, kept) = (listed(&all), listed(&shown));
    assert!(
        all.iter().any(|(_, s)| *s < 0.45) && all.iter().any(|(_, s)| *s >= 0.45),
        "dog.jpg has detections either side of 0.45: {all:?}"
    );
    let above: Vec<_> = all.iter().filter(|(_, s)| *s >= 0.45).collect();
    assert_eq!(kept.len(), above.len(), "only those at 0.45 and above: {kept:?} of {all:?}");
    for ((c, s), (ac, a)) in kept.iter().zip(above) {
        assert!(c == ac && (s - a).abs() < 1e-3, "{kept:?} vs {all:?}");
    }
    let id = shown["frame_id"].as_str().unwrap();
    let stored: Value = reqwest::get(server.url(&format!("/v1/frames/{id}"))).await.unwrap().json().await.unwrap();
    assert_eq!(listed(&stored).len(), kept.len(), "stored as returned: {stored}");

    // SIGHUP with stricter rules: yard-1 now needs everything at 0.99.
    std::fs::write(&rules, "thresholds = { review = 0.3, accept = 0.99 }\n[rules.yard]\n[station.yard-1]\nrules = \"yard\"\n")
        .unwrap();
    let pid = server.child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let mut reloaded = false;
    for _ in 0..50 {
        if std::fs::read_to_string(&server.log).unwrap().contains("decision rules reloaded") {
            reloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(reloaded, "the reload is logged");
    let r = post(&server, "yard-1", "dog.jpg").await;
    let (outcome, _) = expected_outcome(&r, 0.3, 0.99);
    assert_eq!(r["decision"]["outcome"], outcome);
    assert_eq!(r["decision"]["rule"], "yard:normalised", "the explicit codes are gone");

    // A bad reload keeps the rules in use.
    std::fs::write(&rules, "thresholds = { review = 0.9, accept = 0.1 }\n").unwrap();
    std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    let mut refused = false;
    for _ in 0..50 {
        if std::fs::read_to_string(&server.log).unwrap().contains("decision rules not reloaded") {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(refused, "the refused reload is logged");
    let r = post(&server, "yard-1", "dog.jpg").await;
    assert_eq!(r["decision"]["rule"], "yard:normalised", "{}", r["decision"]);

    // The admin endpoint does the same, and says why a file is refused.
    let http = reqwest::Client::new();
    let r = http.post(server.url("/v1/rules/reload")).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "bad_rules", "{v}");
    assert!(v["error"].as_str().unwrap().contains("review") && v["error"].as_str().unwrap().contains("rules in use stay"), "{v}");
    let r = post(&server, "yard-1", "dog.jpg").await;
    assert_eq!(r["decision"]["rule"], "yard:normalised", "the refused file changed nothing: {}", r["decision"]);
    std::fs::write(&rules, "thresholds = { review = 0.3, accept = 0.5 }\n[rules.yard]\nlabels.explicit = { dog = \"K9-02\", bicycle = \"BIKE-8\", car = \"CAR-3\", truck = \"TRK-4\" }\n[station.yard-1]\nrules = \"yard\"\n").unwrap();
    let r = http.post(server.url("/v1/rules/reload")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = post(&server, "yard-1", "dog.jpg").await;
    assert_eq!(r["decision"]["rule"], "yard:explicit", "{}", r["decision"]);
    let code = r["decision"]["code"].as_str().unwrap_or("");
    assert!(["K9-02", "BIKE-8", "CAR-3", "TRK-4"].contains(&code), "the new codes are in use: {}", r["decision"]);
    let r = http.post(server.url("/v1/rules/reload?now=1")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    server.stop().await;
}

#[test]
fn bad_rules_stop_the_start_with_the_reason() {
    let data = scratch("decisions-bad");
    let rules = data.join("rules.toml");
    std::fs::write(&rules, "[rules.a]\nclass.unicorn = { accept = 0.5 }\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_visionq"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("VISIONQ_CACHE_DIR", cache())
        .env("VISIONQ_MODEL", model())
        .env("VISIONQ_DATA_DIR", &data)
        .env("VISIONQ_RULES_FILE", &rules)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rules.toml") && err.contains("no class `unicorn`"), "{err}");
}

/// A label map and a catalogue turn the model's classes into catalogue codes on a
/// real photo: a close code is taken (fuzzy, with its similarity), and under a
/// stricter minimum similarity the same label matches nothing and goes to review
/// with the closest code named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalogue_takes_close_codes_and_refuses_far_ones() {
    let data = scratch("decisions-catalogue");
    // The mapped codes end in -01, the catalogue's in -02: three segments weighted
    // 3, 2, 1, the last half right, give (3 + 2 + 0.5) / 6 = 0.917.
    std::fs::write(data.join("codes.csv"), "code\nDOG-K9-02\nCAR-SEDAN-02\nTRUCK-BOX-02\nBIKE-ROAD-02\n").unwrap();
    let map = r#"labels.explicit = { dog = "DOG-K9-01", car = "CAR-SEDAN-01", truck = "TRUCK-BOX-01", bicycle = "BIKE-ROAD-01" }"#;
    let rules = data.join("rules.toml");
    std::fs::write(
        &rules,
        format!(
            "thresholds = {{ review = 0.3, accept = 0.95 }}\n\
             [rules.plant]\ncatalogue = \"codes.csv\"\nmin_similarity = 0.8\n{map}\n\
             [rules.strict]\ncatalogue = \"codes.csv\"\nmin_similarity = 0.95\n{map}\n\
             [station.fuzzy-1]\nrules = \"plant\"\n[station.strict-1]\nrules = \"strict\"\n"
        ),
    )
    .unwrap();
    let env = [("VISIONQ_DATA_DIR", data.display().to_string()), ("VISIONQ_RULES_FILE", rules.display().to_string())];
    let server = Server::start(&["run"], &env).await;
    let catalogue_code = |class: &str| match class {
        "dog" => "DOG-K9-02",
        "car" => "CAR-SEDAN-02",
        "truck" => "TRUCK-BOX-02",
        "bicycle" => "BIKE-ROAD-02",
        other => panic!("dog.jpg's best detection is {other}, which the map does not cover"),
    };

    let r = post(&server, "fuzzy-1", "dog.jpg").await;
    let d = &r["decision"];
    let (outcome, class) = expected_outcome(&r, 0.3, 0.95);
    let class = class.expect("dog.jpg has a detection");
    assert_eq!(d["outcome"], outcome, "{d}");
    assert_eq!(d["code"], catalogue_code(&class), "the close catalogue code: {d}");
    assert_eq!(d["rule"], "plant:catalogue", "{d}");
    assert!((d["similarity"].as_f64().unwrap() - 5.5 / 6.0).abs() < 1e-3, "{d}");

    let r = post(&server, "strict-1", "dog.jpg").await;
    let d = &r["decision"];
    assert_eq!(d["outcome"], "needs_review", "below the minimum similarity a person looks: {d}");
    assert_eq!(d["code"], Value::Null, "{d}");
    assert_eq!(d["rule"], "strict:catalogue", "{d}");
    let reason = d["reason"].as_str().unwrap();
    assert!(reason.contains("matches no catalogue code") && reason.contains(catalogue_code(&class)), "{reason}");
    server.stop().await;
}
