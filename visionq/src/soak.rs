//! `visionq bench --soak MINUTES`: the bench's steady load for that long while, every
//! `--sample-every` seconds, the server's resident memory and open file descriptors
//! (its `/metrics`: `visionq_process_*`), the queue depths and the p99 of
//! post→result latency over the last interval are sampled and printed, one line per
//! sample. At the end each series is judged by [`judge`]; one that grows without
//! bound fails the run (non-zero exit).
//!
//! The rule: the first half of the run is warm-up (allocator arenas, pools and
//! caches fill) and is not judged. Over the second half, the least-squares slope of
//! the series times the half's length is its growth; the series grows without
//! bound when that growth exceeds its tolerance, the larger of a share of the
//! series' median and a floor ([`RULES`]), and it grows in each quarter of the run
//! (the two halves of the judged half) by more than a quarter of the tolerance. A
//! series that levels off (a queue at its length limit, memory at its plateau) has
//! no slope and passes; a single step (a buffer for a batch size seen for the first
//! time) shows in one quarter only and passes too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::loadgen::{Load, Tally, drive, percentile};

/// A tolerance: growth over the judged half beyond `relative` × median and `floor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub relative: f64,
    pub floor: f64,
}

/// The series sampled, with their rules: name, unit, tolerance.
pub const RULES: &[(&str, &str, Rule)] = &[
    ("rss", "MiB", Rule { relative: 0.10, floor: 32.0 }),
    ("fds", "", Rule { relative: 0.10, floor: 8.0 }),
    ("depth_frames", "", Rule { relative: 0.10, floor: 100.0 }),
    ("depth_tensors", "", Rule { relative: 0.10, floor: 100.0 }),
    ("depth_results", "", Rule { relative: 0.10, floor: 100.0 }),
    ("p99", "ms", Rule { relative: 1.0, floor: 100.0 }),
];

/// Samples each quarter of the run's second half needs for a verdict.
const MIN_PER_QUARTER: usize = 2;

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Growth over the judged half within the tolerance.
    Bounded {
        growth: f64,
        tolerance: f64,
    },
    Grows {
        growth: f64,
        tolerance: f64,
    },
    /// Too few samples (in the second half) to judge.
    TooShort,
}

/// Judges `(seconds, value)` points by `rule` (NaN values, such as the p99 of an
/// interval without results, are left out).
pub fn judge(points: &[(f64, f64)], rule: Rule) -> Verdict {
    let points: Vec<(f64, f64)> = points.iter().copied().filter(|(_, v)| v.is_finite()).collect();
    let (Some(first), Some(last)) = (points.first(), points.last()) else { return Verdict::TooShort };
    let judged = since(&points, (first.0 + last.0) / 2.0);
    let quarter = since(&judged, (judged.first().map_or(0.0, |p| p.0) + last.0) / 2.0);
    let third = &judged[..judged.len() - quarter.len()];
    if third.len() < MIN_PER_QUARTER || quarter.len() < MIN_PER_QUARTER {
        return Verdict::TooShort;
    }
    let growth = growth(&judged);
    let mut values: Vec<f64> = judged.iter().map(|p| p.1).collect();
    values.sort_by(f64::total_cmp);
    let tolerance = (rule.relative * percentile(&values, 50.0).abs()).max(rule.floor);
    // Growth without bound goes on: it shows in both quarters of the judged half,
    // where a single step (a new buffer size, a pool that grew once) shows in one.
    let sustained = growth > tolerance && [third, &quarter[..]].iter().all(|q| self::growth(q) > tolerance / 4.0);
    if sustained { Verdict::Grows { growth, tolerance } } else { Verdict::Bounded { growth, tolerance } }
}

/// The points at or after `t`.
fn since(points: &[(f64, f64)], t: f64) -> Vec<(f64, f64)> {
    points.iter().copied().filter(|p| p.0 >= t).collect()
}

/// The least-squares slope of `points` times their time span: how much they grew.
fn growth(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mt, mv) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let (mut cov, mut var) = (0.0, 0.0);
    for (t, v) in points {
        cov += (t - mt) * (v - mv);
        var += (t - mt) * (t - mt);
    }
    let slope = if var > 0.0 { cov / var } else { 0.0 };
    slope * (points[points.len() - 1].0 - points[0].0)
}

/// One reading of the server's /metrics.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Reading {
    pub rss_bytes: Option<f64>,
    pub fds: Option<f64>,
    /// frames, tensors, results.
    pub depths: [Option<f64>; 3],
}

/// The figures of [`Reading`] in a Prometheus text exposition.
pub fn read_metrics(text: &str) -> Reading {
    let value = |series: &str| -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' '))).and_then(|v| v.trim().parse().ok())
    };
    Reading {
        rss_bytes: value("visionq_process_resident_memory_bytes"),
        fds: value("visionq_process_open_fds"),
        depths: ["frames", "tensors", "results"].map(|q| value(&format!("visionq_queue_depth{{queue=\"{q}\"}}"))),
    }
}

/// Runs the load, sampling every `every`; prints a line per sample and the verdicts.
/// Returns whether every series stayed bounded.
pub async fn run(
    client: reqwest::Client,
    base: &str,
    photos: Arc<Vec<(String, Bytes)>>,
    load: &Load,
    tally: Arc<Mutex<Tally>>,
    every: Duration,
) -> anyhow::Result<bool> {
    let start = Instant::now();
    let driving = {
        let (client, base, load, tally) = (client.clone(), base.to_string(), load.clone(), tally.clone());
        tokio::spawn(async move { drive(client, &base, photos, &load, tally).await })
    };
    tokio::pin!(driving);
    let mut series: Vec<Vec<(f64, f64)>> = vec![Vec::new(); RULES.len()];
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut seen = 0;
    let mut done = false;
    while !done {
        // A sample every `every`, and a last one when the load has ended.
        tokio::select! {
            r = &mut driving => { r?; done = true; }
            _ = tick.tick() => {}
        }
        let t = start.elapsed().as_secs_f64();
        let reading = match client.get(format!("{base}/metrics")).send().await {
            Ok(r) => read_metrics(&r.text().await.unwrap_or_default()),
            Err(e) => {
                println!("soak  t={t:5.0}s  /metrics unreachable: {e}");
                Reading::default()
            }
        };
        let (p99, ok, other) = {
            let all = tally.lock().expect("tally lock");
            let mut window = all.latencies_ms[seen.min(all.latencies_ms.len())..].to_vec();
            seen = all.latencies_ms.len();
            window.sort_by(f64::total_cmp);
            (percentile(&window, 99.0), all.ok(), all.sent() - all.ok())
        };
        let mib = reading.rss_bytes.map(|b| b / (1024.0 * 1024.0));
        let values = [mib, reading.fds, reading.depths[0], reading.depths[1], reading.depths[2], Some(p99)];
        for (s, v) in series.iter_mut().zip(values) {
            s.push((t, v.unwrap_or(f64::NAN)));
        }
        let show = |v: Option<f64>, decimals: usize| v.map_or("?".to_string(), |v| format!("{v:.decimals$}"));
        println!(
            "soak  t={t:5.0}s  rss {} MiB  fds {}  depth frames {} tensors {} results {}  p99 {} ms  results {ok} ok, {other} other",
            show(mib, 1),
            show(reading.fds, 0),
            show(reading.depths[0], 0),
            show(reading.depths[1], 0),
            show(reading.depths[2], 0),
            show(Some(p99).filter(|p| p.is_finite()), 1),
        );
    }
    let mut bounded = true;
    for ((name, unit, rule), points) in RULES.iter().zip(&series) {
        let line = match judge(points, *rule) {
            Verdict::Bounded { growth, tolerance } => {
                format!("bounded  (growth {growth:+.1} {unit} over the second half; tolerance {tolerance:.1})")
            }
            Verdict::Grows { growth, tolerance } => {
                bounded = false;
                format!("GROWS    (growth {growth:+.1} {unit} over the second half; tolerance {tolerance:.1})")
            }
            Verdict::TooShort => format!("not judged (fewer than {MIN_PER_QUARTER} samples in a quarter of the run's second half)"),
        };
        println!("verdict  {name:<14} {line}");
    }
    println!("soak verdict: {}", if bounded { "PASS" } else { "FAIL: a series grows without bound" });
    Ok(bounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize, f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (0..n).map(|i| (i as f64 * 10.0, f(i as f64 * 10.0))).collect()
    }

    const RSS: Rule = Rule { relative: 0.10, floor: 32.0 };

    #[test]
    fn a_steady_leak_grows() {
        // 300 MiB leaking 1 MiB every 10 s over 15 minutes: +45 MiB in the second half.
        let leak = series(90, |t| 300.0 + t / 10.0);
        assert!(matches!(judge(&leak, RSS), Verdict::Grows { growth, .. } if (growth - 44.0).abs() < 1.0), "{:?}", judge(&leak, RSS));
        // A descriptor leak of one per 30 s.
        let fds = series(90, |t| 40.0 + (t / 30.0).floor());
        assert!(matches!(judge(&fds, Rule { relative: 0.10, floor: 8.0 }), Verdict::Grows { .. }));
        // A backlog: the queue fills at 5 frames/s.
        let depth = series(30, |t| 5.0 * t);
        assert!(matches!(judge(&depth, Rule { relative: 0.10, floor: 100.0 }), Verdict::Grows { .. }));
    }

    #[test]
    fn a_plateau_noise_or_a_full_queue_is_bounded() {
        // Warm-up growth in the first half, flat after.
        let warm = series(90, |t| if t < 300.0 { 200.0 + t / 3.0 } else { 300.0 });
        assert!(matches!(judge(&warm, RSS), Verdict::Bounded { .. }), "{:?}", judge(&warm, RSS));
        // Noise of ±10 MiB around 300.
        let noisy = series(90, |t| 300.0 + if ((t / 10.0) as u64).is_multiple_of(2) { 10.0 } else { -10.0 });
        assert!(matches!(judge(&noisy, RSS), Verdict::Bounded { .. }));
        // A queue held at its length limit.
        let full = series(30, |t| (100.0 * t).min(10_000.0));
        assert!(matches!(judge(&full, Rule { relative: 0.10, floor: 100.0 }), Verdict::Bounded { .. }), "{:?}", judge(&full, RSS));
        // One step up in the judged half (ONNX Runtime's buffers for a batch size
        // seen for the first time), flat before and after.
        let step = series(90, |t| if t < 700.0 { 300.0 } else { 350.0 });
        assert!(matches!(judge(&step, RSS), Verdict::Bounded { growth, .. } if growth > 32.0), "{:?}", judge(&step, RSS));
        // A shrinking series is not growth.
        assert!(matches!(judge(&series(30, |t| 1000.0 - t), RSS), Verdict::Bounded { .. }));
    }

    #[test]
    fn too_few_samples_or_gaps_are_not_judged_and_nan_is_skipped() {
        assert_eq!(judge(&series(5, |t| 100.0 * t), RSS), Verdict::TooShort);
        assert!(matches!(judge(&series(7, |t| 100.0 * t), RSS), Verdict::Grows { .. }));
        assert_eq!(judge(&[], RSS), Verdict::TooShort);
        let mut gappy = series(20, |_| 120.0);
        gappy[15].1 = f64::NAN;
        assert!(matches!(judge(&gappy, Rule { relative: 1.0, floor: 100.0 }), Verdict::Bounded { growth, .. } if growth.abs() < 1e-9));
    }

    #[test]
    fn the_figures_are_read_from_metrics() {
        let text = "# TYPE visionq_process_open_fds gauge\nvisionq_process_open_fds 42\nvisionq_process_resident_memory_bytes 1048576\n\
                    visionq_queue_depth{queue=\"frames\"} 7\nvisionq_queue_depth{queue=\"results\"} 0\n";
        let r = read_metrics(text);
        assert_eq!(r.fds, Some(42.0));
        assert_eq!(r.rss_bytes, Some(1048576.0));
        assert_eq!(r.depths, [Some(7.0), None, Some(0.0)]);
    }
}
