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

const FILES: &[Asset] = &[
    Asset { name: "app.js", content_type: "text/javascript; charset=utf-8", body: include_str!("../assets/app.js") },
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
