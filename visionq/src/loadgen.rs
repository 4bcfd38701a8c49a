//! The load generator shared by `bench` and `demo`: simulated stations each posting
//! real photos at a fixed rate and waiting for their results, tallied as they come.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;

/// What the simulated stations do.
#[derive(Debug, Clone)]
pub struct Load {
    pub stations: usize,
    /// Frames per second per station.
    pub rate: f64,
    pub duration: Duration,
    /// Station ids are `PREFIX-1` … `PREFIX-N`.
    pub station_prefix: String,
    /// How long each request waits for its result.
    pub wait_ms: u64,
    /// Keep each answered frame's `timings_ms` (for [`Tally::tail_breakdown`]).
    pub keep_timings: bool,
}

/// What came back so far.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub latencies_ms: Vec<f64>,
    /// For each answered frame (200), when it was sent (seconds after the load
    /// began) and its latency (ms): where in a run a tail came from.
    pub sent_latency: Vec<(f64, f64)>,
    /// With [`Load::keep_timings`]: each answered frame's latency (ms) and the
    /// stage timings its result reported (`timings_ms`).
    pub timings: Vec<(f64, BTreeMap<String, f64>)>,
    pub statuses: BTreeMap<u16, usize>,
    pub transport_errors: usize,
    pub detections: usize,
    pub per_class: BTreeMap<String, usize>,
}

impl Tally {
    pub fn sent(&self) -> usize {
        self.statuses.values().sum::<usize>() + self.transport_errors
    }

    pub fn ok(&self) -> usize {
        self.statuses.get(&200).copied().unwrap_or(0)
    }

    /// Latency percentiles (p50, p95, p99, max) in ms.
    pub fn percentiles(&self) -> [f64; 4] {
        let mut lat = self.latencies_ms.clone();
        lat.sort_by(f64::total_cmp);
        [percentile(&lat, 50.0), percentile(&lat, 95.0), percentile(&lat, 99.0), lat.last().copied().unwrap_or(f64::NAN)]
    }

    /// The answered frames by the second they were sent in: (second, frames, p50 ms,
    /// p99 ms, max ms), one row per second that sent any.
    pub fn by_second(&self) -> Vec<(usize, usize, f64, f64, f64)> {
        let mut seconds: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        for &(sent, ms) in &self.sent_latency {
            seconds.entry(sent.max(0.0) as usize).or_default().push(ms);
        }
        seconds
            .into_iter()
            .map(|(s, mut v)| {
                v.sort_by(f64::total_cmp);
                (s, v.len(), percentile(&v, 50.0), percentile(&v, 99.0), v[v.len() - 1])
            })
            .collect()
    }

    /// Where the frames at or above the `pct` percentile of latency spent it: the
    /// mean of each stage the results reported, then `outside` (the client's latency
    /// less the stages' sum: HTTP, the reply's wait, the client). Empty without
    /// [`Load::keep_timings`].
    pub fn tail_breakdown(&self, pct: f64) -> (usize, Vec<(String, f64)>) {
        let mut lat: Vec<f64> = self.timings.iter().map(|(ms, _)| *ms).collect();
        lat.sort_by(f64::total_cmp);
        let cut = percentile(&lat, pct);
        let slow: Vec<_> = self.timings.iter().filter(|(ms, _)| *ms >= cut).collect();
        if slow.is_empty() {
            return (0, Vec::new());
        }
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        for (ms, stages) in &slow {
            for (k, v) in stages.iter() {
                *sums.entry(k.clone()).or_default() += v;
            }
            *sums.entry("outside".into()).or_default() += ms - stages.values().sum::<f64>();
        }
        let n = slow.len() as f64;
        let mut out: Vec<(String, f64)> = sums.into_iter().map(|(k, v)| (k, v / n)).collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        (slow.len(), out)
    }

    /// Counts one result object's detections.
    pub fn count_detections(&mut self, result: &serde_json::Value) {
        for d in result["detections"].as_array().map(Vec::as_slice).unwrap_or_default() {
            self.detections += 1;
            if let Some(c) = d["class_name"].as_str() {
                *self.per_class.entry(c.to_string()).or_default() += 1;
            }
        }
    }
}

/// The `.jpg`/`.jpeg` files of a folder, sorted by name.
pub fn load_photos(dir: &Path) -> anyhow::Result<Vec<(String, Bytes)>> {
    let mut photos = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if ext == "jpg" || ext == "jpeg" {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            photos.push((name, Bytes::from(std::fs::read(&path)?)));
        }
    }
    photos.sort_by(|a, b| a.0.cmp(&b.0));
    if photos.is_empty() {
        bail!("no .jpg photos in {} (run `python3 tools/assets.py`)", dir.display());
    }
    Ok(photos)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs the stations against `base` until each has posted its frames and every
/// request has its answer; `tally` fills in as answers arrive. The stations' ticks
/// are spread evenly over one period.
pub async fn drive(client: reqwest::Client, base: &str, photos: Arc<Vec<(String, Bytes)>>, load: &Load, tally: Arc<Mutex<Tally>>) {
    let mut stations = tokio::task::JoinSet::new();
    let began = Instant::now();
    let frames = (load.rate * load.duration.as_secs_f64()).round() as usize;
    let period = Duration::from_secs_f64(1.0 / load.rate.max(0.001));
    for s in 0..load.stations {
        let (client, photos, tally) = (client.clone(), photos.clone(), tally.clone());
        let url = format!("{base}/v1/stations/{}-{}/frames?wait_ms={}", load.station_prefix, s + 1, load.wait_ms);
        let keep_timings = load.keep_timings;
        // Independent cameras are not in phase: station s starts s/N of a period
        // late, so N stations at R frames/s offer N×R evenly, not N frames at once.
        let phase = period.mul_f64(s as f64 / load.stations as f64);
        stations.spawn(async move {
            tokio::time::sleep(phase).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut requests = tokio::task::JoinSet::new();
            for i in 0..frames {
                tick.tick().await;
                let body = photos[(i + s) % photos.len()].1.clone();
                let (client, url, tally) = (client.clone(), url.clone(), tally.clone());
                requests.spawn(async move {
                    let t0 = Instant::now();
                    let sent = t0.duration_since(began).as_secs_f64();
                    let r = client.post(&url).header("content-type", "image/jpeg").body(body).send().await;
                    let mut t = Tally::default();
                    match r {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let text = resp.text().await.unwrap_or_default();
                            if status == 200 {
                                let ms = t0.elapsed().as_secs_f64() * 1e3;
                                t.latencies_ms.push(ms);
                                t.sent_latency.push((sent, ms));
                                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                                    t.count_detections(&v);
                                    if keep_timings {
                                        let stages = v["timings_ms"].as_object().into_iter().flatten();
                                        t.timings.push((ms, stages.filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect()));
                                    }
                                }
                            }
                            t.statuses.insert(status, 1);
                        }
                        Err(_) => t.transport_errors = 1,
                    }
                    let mut all = tally.lock().expect("tally lock");
                    all.latencies_ms.extend(t.latencies_ms);
                    all.sent_latency.extend(t.sent_latency);
                    all.timings.extend(t.timings);
                    all.detections += t.detections;
                    all.transport_errors += t.transport_errors;
                    for (k, v) in t.per_class {
                        *all.per_class.entry(k).or_default() += v;
                    }
                    for (k, v) in t.statuses {
                        *all.statuses.entry(k).or_default() += v;
                    }
                });
            }
            while requests.join_next().await.is_some() {}
        });
    }
    while stations.join_next().await.is_some() {}
}

/// The batch-size histogram's cumulative bucket counts from a metrics text.
pub fn batch_buckets(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("visionq_infer_batch_size_bucket{le=\""))
        .filter_map(|rest| {
            let (le, value) = rest.split_once("\"} ")?;
            Some((le.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Forward passes between two metric snapshots, and "bucket:count" pairs.
pub fn batch_distribution(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> (f64, String) {
    let mut sorted: Vec<(f64, String)> =
        after.keys().filter_map(|k| Some((if k == "+Inf" { f64::INFINITY } else { k.parse().ok()? }, k.clone()))).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut prev, mut passes, mut dist) = (0.0, 0.0, Vec::new());
    for (_, le) in &sorted {
        let cum = after.get(le).copied().unwrap_or(0.0) - before.get(le).copied().unwrap_or(0.0);
        let n = cum - prev;
        prev = cum;
        if n > 0.0 {
            dist.push(format!("{le}:{n}"));
        }
        passes = cum;
    }
    (passes, dist.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_distribution_is_per_bucket_and_relative_to_the_start() {
        let before: BTreeMap<String, f64> = [("1", 2.0), ("2", 2.0), ("+Inf", 2.0)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let after: BTreeMap<String, f64> = [("1", 3.0), ("2", 7.0), ("+Inf", 7.0)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let (passes, dist) = batch_distribution(&before, &after);
        assert_eq!(passes, 5.0);
        assert_eq!(dist, "1:1 2:4");
    }

    #[test]
    fn by_second_groups_answers_by_when_they_were_sent() {
        let t = Tally { sent_latency: vec![(0.1, 5.0), (0.9, 7.0), (1.0, 900.0), (2.5, 3.0), (2.6, 4.0)], ..Default::default() };
        assert_eq!(t.by_second(), vec![(0, 2, 7.0, 7.0, 7.0), (1, 1, 900.0, 900.0, 900.0), (2, 2, 4.0, 4.0, 4.0)]);
    }

    #[test]
    fn tail_breakdown_averages_the_slowest_frames_stages() {
        let stages = |q: f64, inf: f64| BTreeMap::from([("queue_wait_tensors".to_string(), q), ("inference".to_string(), inf)]);
        let mut timings: Vec<(f64, BTreeMap<String, f64>)> = (0..98).map(|_| (10.0, stages(1.0, 2.0))).collect();
        timings.push((500.0, stages(400.0, 2.0)));
        timings.push((700.0, stages(600.0, 4.0)));
        let t = Tally { timings, ..Default::default() };
        let (n, by_stage) = t.tail_breakdown(99.0);
        assert_eq!(n, 2);
        assert_eq!(by_stage, vec![("queue_wait_tensors".into(), 500.0), ("outside".into(), 97.0), ("inference".into(), 3.0)]);
        assert_eq!(Tally::default().tail_breakdown(99.0), (0, vec![]));
    }

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
