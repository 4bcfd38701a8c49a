//! The OpenAPI 3 document of the HTTP API. Each crate describes its own routes from
//! its handlers' annotations and types (`visionq_ingest::openapi`,
//! `visionq_results::openapi`, `visionq_dashboard::openapi`); this module adds the
//! routes every process serves and merges the parts for the roles a process runs.
//! A process serves its own at `GET /v1/openapi.json`; `visionq openapi` prints the
//! whole API's, which is checked in as `docs/openapi.json`.
//!
//! The tests below hold the document to the routers: they walk the route table of
//! the router each role set really serves ([`crate::compose::http_app`]), probe
//! every method on every path, and require the same set of operations in the
//! document — a route added without its description fails, and so does a
//! description left behind by a removed route.

use std::collections::BTreeSet;

use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use visionq_contract::refusal::ErrorBody;

use crate::role::Role;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "visionq HTTP API",
        description = "Stations post frames to the ingest role; results, history, the live stream and the dashboard are \
                       the results role's; every process serves health, metrics, its configuration and this document \
                       for its own routes. With tokens configured, calls carry `Authorization: Bearer <token>` \
                       (docs/SECURITY.md); every refusal is `ErrorBody` JSON."
    ),
    paths(
        crate::process_routes::livez,
        crate::process_routes::readyz,
        crate::process_routes::metrics_text,
        crate::process_routes::config,
        crate::process_routes::openapi,
    ),
    components(schemas(ErrorBody)),
    tags((name = "process", description = "Served by every process: health, metrics, configuration, this document")),
    modifiers(&BearerAuth),
)]
struct ProcessApi;

#[derive(OpenApi)]
#[openapi(
    paths(
        crate::model_routes::list,
        crate::model_routes::activate,
        crate::model_routes::rollback,
        crate::model_routes::start_candidate,
        crate::model_routes::end_candidate
    ),
    components(schemas(
        crate::model_routes::ModelList,
        crate::model_routes::ModelEntry,
        crate::model_routes::ActivateRequest,
        crate::model_routes::Activation,
        crate::model_routes::CandidateRequest,
        crate::model_routes::CandidateView,
        crate::model_routes::AgreementView,
        crate::model_routes::EndedView,
    )),
    tags((name = "models", description = "The infer role's model repository: list, activate, roll back, run a canary or shadow candidate (admins only)")),
)]
struct ModelsApi;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("A token from the tokens file (`visionq token new`); without one configured, none is needed"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document of the routes a process running `roles` serves.
pub fn document(roles: &BTreeSet<Role>) -> Document {
    let mut doc = ProcessApi::openapi();
    if roles.contains(&Role::Ingest) {
        doc.merge(visionq_ingest::openapi::IngestApi::openapi());
    }
    if roles.contains(&Role::Infer) {
        doc.merge(ModelsApi::openapi());
    }
    if roles.contains(&Role::Results) {
        doc.merge(visionq_results::openapi::ResultsApi::openapi());
        doc.merge(visionq_dashboard::openapi::DashboardApi::openapi());
        doc.merge(visionq_events::api::EventsApi::openapi());
    }
    doc
}

/// The whole API: every role's routes.
pub fn whole() -> Document {
    document(&[Role::Ingest, Role::Preprocess, Role::Infer, Role::Results].into())
}

/// A document as served and checked in: pretty JSON ending in a newline.
pub fn json(doc: &Document) -> String {
    let mut text = serde_json::to_string_pretty(doc).expect("an OpenAPI document serialises");
    text.push('\n');
    text
}

/// `visionq openapi`: the whole API's document on standard output.
pub fn print() {
    print!("{}", json(&whole()));
}

/// The version of the result's schema, in the schema's `$id`. A change that takes a
/// field away or changes what one means makes a new version (and a new file);
/// an added optional field does not.
pub const RESULT_SCHEMA_VERSION: u32 = 1;

/// The JSON Schema (2020-12) of a result as stations, the live stream, the history
/// API and the event sinks give it: `FrameResult` and every component it refers to,
/// taken from the API's document (the same derive), references rewritten to `$defs`.
pub fn result_schema() -> serde_json::Value {
    let doc = serde_json::to_value(whole()).expect("an OpenAPI document serialises");
    let components = &doc["components"]["schemas"];
    let mut defs = serde_json::Map::new();
    let mut todo = vec!["FrameResult".to_string()];
    while let Some(name) = todo.pop() {
        if defs.contains_key(&name) {
            continue;
        }
        let schema = components.get(&name).unwrap_or_else(|| panic!("component {name} is in the document")).clone();
        let text = schema.to_string();
        todo.extend(text.split("\"#/components/schemas/").skip(1).filter_map(|rest| rest.split('"').next()).map(str::to_string));
        defs.insert(name, schema);
    }
    let defs: serde_json::Value =
        serde_json::from_str(&serde_json::Value::Object(defs).to_string().replace("#/components/schemas/", "#/$defs/"))
            .expect("the rewritten definitions are JSON");
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("urn:visionq:result:v{RESULT_SCHEMA_VERSION}"),
        "title": format!("A visionq result (schema version {RESULT_SCHEMA_VERSION})"),
        "description": "One frame's result: the reply to a post that waited, the live stream's push, a history row, an event sink's payload. Generated by `visionq openapi --result-schema` from the same types as docs/openapi.json.",
        "$ref": "#/$defs/FrameResult",
        "$defs": defs,
    })
}

/// `visionq openapi --result-schema`: [`result_schema`] on standard output, as checked in.
pub fn print_result_schema() {
    print!("{}", result_schema_json());
}

fn result_schema_json() -> String {
    let mut text = serde_json::to_string_pretty(&result_schema()).expect("a schema serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use axum::Router;
    use visionq_contract::auth::{Auth, Scope, TokenEntry, token_hash};
    use visionq_contract::config::Durability;
    use visionq_contract::{Config, Metrics};

    use super::*;

    const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

    /// The paths in `app`'s route table. axum keeps the table private but prints it
    /// in the router's `Debug`: `path_router` (the routes, `RouteId(n): "/path"`),
    /// then `fallback_router` (the catch-all of the JSON 404), left out here.
    fn registered_paths(app: &Router) -> BTreeSet<String> {
        let debug = format!("{app:?}");
        let routes = debug.split_once("path_router:").and_then(|(_, r)| r.split_once("fallback_router:")).map(|(r, _)| r);
        let mut out = BTreeSet::new();
        let mut rest = routes.expect("axum's Debug of a Router names path_router, then fallback_router");
        while let Some(i) = rest.find("RouteId(") {
            rest = &rest[i + "RouteId(".len()..];
            let Some(after) = rest.find("): \"").map(|j| &rest[j + 4..]) else { continue };
            if let Some(end) = after.find('"') {
                out.insert(after[..end].to_string());
            }
        }
        out.retain(|p| !p.contains("__private__"));
        out
    }

    /// Every (method, path) `app` routes: each path of its table probed with each
    /// method on a live listener (a `405` means the path does not take the method).
    /// With tokens on, the protected routes answer 401 before doing anything.
    async fn served_operations(app: Router) -> (BTreeSet<(String, String)>, String) {
        let paths = registered_paths(&app);
        assert!(paths.contains("/livez") && paths.contains("/v1/openapi.json"), "the route table was not read: {paths:?}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let mut ops = BTreeSet::new();
        // gRPC services (`/<package.Service>/…`) are described by their `.proto`
        // (ingest/proto), not by this document.
        let grpc = |path: &str| path.trim_start_matches('/').split('/').next().is_some_and(|s| s.contains('.'));
        for path in paths.iter().filter(|p| !grpc(p)) {
            // A concrete path: every `{parameter}` segment filled in.
            let concrete: Vec<&str> = path.split('/').map(|s| if s.starts_with('{') { "probe" } else { s }).collect();
            let url = format!("{base}{}", concrete.join("/"));
            for method in METHODS {
                let status = client.request(method.parse().unwrap(), &url).send().await.unwrap().status();
                if status != reqwest::StatusCode::METHOD_NOT_ALLOWED {
                    ops.insert((method.to_string(), path.clone()));
                }
            }
        }
        let served_doc = client.get(format!("{base}/v1/openapi.json")).send().await.unwrap().text().await.unwrap();
        server.abort();
        (ops, served_doc)
    }

    fn documented_operations(doc: &Document) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in &doc.paths.paths {
            let methods = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("DELETE", item.delete.is_some()),
                ("PATCH", item.patch.is_some()),
            ];
            for (method, present) in methods {
                if present {
                    ops.insert((method.to_string(), path.clone()));
                }
            }
        }
        ops
    }

    /// The router `serve` builds for `roles`, with tokens on, an in-memory broker and
    /// a SQLite store in `dir`.
    async fn app_for(roles: &BTreeSet<Role>, dir: &std::path::Path) -> Router {
        let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
        config.broker.durability = Durability::Memory;
        let config = Arc::new(config);
        let entry = TokenEntry { name: "admin".into(), scope: Scope::Admin, stations: vec![], sha256: token_hash("probe-token") };
        let auth = Arc::new(Auth::from_entries(vec![entry]).unwrap());
        let metrics = Arc::new(Metrics::new());
        let broker = crate::compose::broker(&config).await.unwrap();
        let mut store = None;
        let results = match roles.contains(&Role::Results) {
            true => {
                let s = visionq_results::open_store(&format!("sqlite://{}/results.db", dir.display())).await.unwrap();
                let decider = Arc::new(visionq_decide::Decider::load(None, None).unwrap());
                store = Some(s.clone());
                let drift = visionq_results::drift::Drift::start(config.drift.clone(), metrics.clone(), s.clone()).await;
                let parts = visionq_results::api::ResultsParts {
                    store: s,
                    drift,
                    metrics: metrics.clone(),
                    config: config.clone(),
                    auth: auth.clone(),
                    classes: None,
                    decider,
                    keeper: None,
                };
                Some(crate::compose::ReadSide::start(&broker, parts, None).await.unwrap())
            }
            false => None,
        };
        let ingest = match roles.contains(&Role::Ingest) {
            true => Some(Arc::new(visionq_ingest::IngestState {
                broker: broker.clone(),
                metrics: metrics.clone(),
                config: config.clone(),
                waiters: visionq_ingest::Waiters::start(&broker).await.unwrap(),
                auth: auth.clone(),
                limiter: Default::default(),
                stopping: tokio::sync::watch::channel(false).1,
                streams: Default::default(),
            })),
            false => None,
        };
        let health = Arc::new(crate::process_routes::Health {
            broker,
            store,
            model_ready: Arc::new(AtomicBool::new(true)),
            needs_model: false,
            metrics,
        });
        let mut process = crate::process_routes::router(health, config.clone(), auth.clone(), json(&document(roles)));
        if roles.contains(&Role::Infer) {
            let models = Arc::new(crate::model_routes::ModelsState { controls: Vec::new(), serving: None });
            process = process.merge(crate::model_routes::router(models, auth));
        }
        crate::compose::http_app(roles, results, ingest, process)
    }

    #[tokio::test]
    async fn every_route_of_every_role_is_documented_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("visionq-openapi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let all: BTreeSet<Role> = [Role::Ingest, Role::Preprocess, Role::Infer, Role::Results].into();
        let sets: Vec<BTreeSet<Role>> =
            vec![[Role::Ingest].into(), [Role::Preprocess].into(), [Role::Infer].into(), [Role::Results].into(), all];
        for roles in sets {
            let (served, served_doc) = served_operations(app_for(&roles, &dir).await).await;
            let doc = document(&roles);
            let documented = documented_operations(&doc);
            let undocumented: Vec<_> = served.difference(&documented).collect();
            let unserved: Vec<_> = documented.difference(&served).collect();
            assert!(undocumented.is_empty(), "{roles:?}: routes missing from the OpenAPI document: {undocumented:?}");
            assert!(unserved.is_empty(), "{roles:?}: documented but not routed: {unserved:?}");
            assert_eq!(served_doc, json(&doc), "{roles:?}: GET /v1/openapi.json is not this process's document");
        }
        // The results role's routes include the ones this issue added.
        let whole = documented_operations(&whole());
        assert!(whole.contains(&("GET".to_string(), "/v1/stations".to_string())));
        assert!(whole.contains(&("POST".to_string(), "/v1/stations/{station}/frames".to_string())));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == json(&whole()),
            "docs/openapi.json differs from the API's document: run `visionq openapi > docs/openapi.json` and commit it"
        );
    }

    #[test]
    fn the_checked_in_result_schema_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/result.schema.json");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == result_schema_json(),
            "docs/result.schema.json differs: run `visionq openapi --result-schema > docs/result.schema.json` and commit it"
        );
        let v = result_schema();
        let defs = v["$defs"].as_object().unwrap();
        for name in ["FrameResult", "Detection", "Decision", "Review", "ImageSize", "ModelInfo"] {
            assert!(defs.contains_key(name), "{name} missing from the result schema");
        }
        assert!(!v.to_string().contains("#/components/"), "every reference points into $defs");
        assert!(defs["FrameResult"]["properties"]["batch_size"].is_object(), "batch_size is the result's own field");
    }

    #[test]
    fn the_document_is_openapi_3_with_bearer_auth_and_one_refusal_shape() {
        let v: serde_json::Value = serde_json::from_str(&json(&whole())).unwrap();
        assert!(v["openapi"].as_str().unwrap().starts_with("3."));
        assert_eq!(v["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        let error = &v["components"]["schemas"]["ErrorBody"];
        assert_eq!(error["required"], serde_json::json!(["error", "code"]));
        // Every documented refusal (4xx, 5xx) with a JSON body is an ErrorBody.
        for (path, item) in v["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    let body = &response["content"]["application/json"]["schema"]["$ref"];
                    if status.starts_with('4') && !body.is_null() {
                        assert_eq!(body, "#/components/schemas/ErrorBody", "{method} {path} {status}");
                    }
                }
            }
        }
    }
}
