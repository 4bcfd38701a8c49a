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
