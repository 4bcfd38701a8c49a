//! docs/result.schema.json against real results: the replies to posts that waited
//! (detections and decisions of the real model on the real photos), the same frames
//! read back from the history API, checked with a JSON Schema validator that did not
//! come from this code (Python's `jsonschema`, Draft 2020-12, in the tools venv). A
//! result bent out of shape must fail the same check, so the check can fail.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// Validates each JSON document of `docs` against the checked-in result schema;
/// returns the validator's verdict per document (empty: valid).
fn validate(docs: &[Value], tag: &str) -> Vec<String> {
    let dir = scratch(tag);
    let input = dir.join("results.jsonl");
    std::fs::write(&input, docs.iter().map(|d| format!("{d}\n")).collect::<String>()).unwrap();
    let script = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
for line in open(sys.argv[2]):
    errors = sorted(e.message for e in v.iter_errors(json.loads(line)))
    print(json.dumps("; ".join(errors)))
"#;
    let out = Command::new(cache().join("venv/bin/python"))
        .args(["-c", script])
        .arg(repo().join("docs/result.schema.json"))
        .arg(&input)
        .output()
        .expect("the venv's python runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str::<String>(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_results_match_the_published_schema() {
    let data = scratch("result-schema-data");
    let rules = data.join("rules.toml");
    let text = "thresholds = { review = 0.3, accept = 0.8 }\n[rules.plant]\nlabels.explicit = { dog = \"K9-01\" }\n\
                [station.schema-1]\nrules = \"plant\"\n";
    std::fs::write(&rules, text).unwrap();
    let env = [("VISIONQ_DATA_DIR", data.display().to_string()), ("VISIONQ_RULES_FILE", rules.display().to_string())];
    let server = Server::start(&["run"], &env).await;
    let client = reqwest::Client::new();
    let mut results = Vec::new();
    for name in ["dog.jpg", "bus.jpg", "zidane.jpg", "horses.jpg"] {
        let (status, result) = post_jpeg(&client, &server.url("/v1/stations/schema-1/frames?wait_ms=30000"), photo_bytes(name)).await;
        assert_eq!(status, 200, "{result}");
        results.push(result);
    }
    assert!(results.iter().all(|r| r["status"] == "ok" && r["batch_size"].as_u64().is_some()), "{results:?}");
    assert!(results.iter().any(|r| r["decision"]["outcome"].is_string()), "the rules made decisions: {results:?}");
    assert!(results.iter().map(|r| r["detections"].as_array().unwrap().len()).sum::<usize>() > 5, "real detections");
    let page: Value = client.get(server.url("/v1/stations/schema-1/results?limit=10")).send().await.unwrap().json().await.unwrap();
    let history = page["results"].as_array().expect("a page of results").clone();
    assert_eq!(history.len(), 4, "{page}");
    results.extend(history);

    let verdicts = validate(&results, "result-schema-ok");
    assert_eq!(verdicts.len(), results.len());
    for (r, v) in results.iter().zip(&verdicts) {
        assert!(v.is_empty(), "{v}: {r}");
    }

    // The same results bent out of shape: each must fail.
    let mut bent = Vec::new();
    let mut r = results[0].clone();
    r["detections"][0]["score"] = Value::from("high");
    bent.push(r);
    let mut r = results[0].clone();
    r.as_object_mut().unwrap().remove("frame_id");
    bent.push(r);
    let mut r = results[0].clone();
    r["status"] = Value::from("fine");
    bent.push(r);
    let mut r = results[0].clone();
    r["batch_size"] = Value::from(-1);
    bent.push(r);
    for (r, v) in bent.iter().zip(validate(&bent, "result-schema-bent")) {
        assert!(!v.is_empty(), "a bent result passed the schema: {r}");
    }
    server.stop().await;
}
