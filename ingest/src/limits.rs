//! Per-station rate limits: a token bucket per station, refilled at the station's
//! frames/s up to its burst. Per ingest process — with N replicas behind a load
//! balancer a station gets up to N times its rate (the SRE sets the rate knowing N).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Stations tracked at most; beyond it, buckets that are full again (idle stations)
/// are forgotten, so random station ids cannot grow the map without bound.
const MAX_TRACKED: usize = 4096;

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Takes one frame's worth from `station`'s bucket, of the limit
    /// (frames/s, burst) that `Config::rate_limit` gives; `Err(wait)` when it is
    /// empty, with how long until the next frame would pass.
    pub fn take(&self, station: &str, (fps, burst): (f64, u32)) -> Result<(), Duration> {
        self.take_at(station, fps, burst as f64, Instant::now())
    }

    fn take_at(&self, station: &str, fps: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(station) {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * fps < burst);
        }
        let b = buckets.entry(station.to_string()).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * fps).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / fps))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let l = RateLimiter::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take_at("cam", 10.0, 3.0, t0).is_ok());
        }
        let wait = l.take_at("cam", 10.0, 3.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // Another station has its own bucket.
        assert!(l.take_at("cam2", 10.0, 3.0, t0).is_ok());
        // 100 ms later one more frame passes, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.take_at("cam", 10.0, 3.0, t1).is_ok());
        assert!(l.take_at("cam", 10.0, 3.0, t1).is_err());
        // Over a long idle time the bucket fills to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.take_at("cam", 10.0, 3.0, t2).is_ok());
        }
        assert!(l.take_at("cam", 10.0, 3.0, t2).is_err());
    }

    #[test]
    fn idle_stations_are_forgotten_when_too_many_are_tracked() {
        let l = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED {
            l.take_at(&format!("s{i}"), 1.0, 2.0, t0).unwrap();
        }
        l.take_at("busy", 1.0, 2.0, t0).unwrap();
        // Two seconds on, every bucket but the newest refilled: those are dropped.
        l.take_at("new", 1.0, 2.0, t0 + Duration::from_secs(2)).unwrap();
        assert!(l.buckets.lock().unwrap().len() < 10);
    }
}
