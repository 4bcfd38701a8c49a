//! The page's static files, built into the binary.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

pub const INDEX: Asset =
    Asset { name: "index.html", content_type: "text/html; charset=utf-8", body: include_str!("../assets/index.html") };

/// The station page (`/station/{station}`): a camera streaming to its station.
pub const STATION: Asset =
    Asset { name: "station.html", content_type: "text/html; charset=utf-8", body: include_str!("../assets/station.html") };

/// The dashboard's script is app.js and the ES modules it imports (each one here);
/// `assets/tests/` and `assets/package.json` are for node, not served.
const FILES: &[Asset] = &[
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/app.js") },
    Asset { name: "access.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/access.js") },
    Asset { name: "alerts.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/alerts.js") },
    Asset { name: "counts.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/counts.js") },
    Asset { name: "detail.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/detail.js") },
    Asset { name: "dom.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/dom.js") },
    Asset { name: "drift.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/drift.js") },
    Asset { name: "frame.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/frame.js") },
    Asset { name: "live.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/live.js") },
    Asset { name: "pipeline.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/pipeline.js") },
    Asset { name: "prom.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/prom.js") },
    Asset { name: "review.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/review.js") },
    Asset { name: "state.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/state.js") },
    Asset { name: "tiles.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/tiles.js") },
    Asset { name: "time.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/time.js") },
    Asset { name: "boxes.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/boxes.js") },
    Asset { name: "station.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/station.js") },
    Asset { name: "station.css", content_type: "text/css; charset=utf-8", body: include_str!("../assets/station.css") },
    Asset { name: "app.css", content_type: "text/css; charset=utf-8", body: include_str!("../assets/app.css") },
    Asset { name: "icon.svg", content_type: "image/svg+xml", body: include_str!("../assets/icon.svg") },
];

/// An asset under `/dashboard/` by file name.
pub fn get(name: &str) -> Option<&'static Asset> {
    FILES.iter().find(|a| a.name == name)
}

/// A validator for every asset at once: they only change with the binary.
pub fn etag() -> &'static str {
    static ETAG: OnceLock<String> = OnceLock::new();
    ETAG.get_or_init(|| {
        let mut h = DefaultHasher::new();
        INDEX.body.hash(&mut h);
        STATION.body.hash(&mut h);
        for a in FILES {
            a.body.hash(&mut h);
        }
        format!("\"{:016x}\"", h.finish())
    })
}
