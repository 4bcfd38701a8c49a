//! CPU time of a process and of its threads, read from `/proc` (Linux), for the
//! benchmarks' "server CPU in cores" and "busiest threads" figures.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/*/stat` (USER_HZ: 100 on every Linux build
/// visionq runs on; `getconf CLK_TCK` says so).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime in seconds from one `stat` line (the fields after the `(comm)`).
fn stat_seconds(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // After the comm: state is field 3 of the man page, utime 14, stime 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SECOND))
}

/// CPU seconds a process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    stat_seconds(&text).map(|(_, s)| s).ok_or_else(|| anyhow::anyhow!("cannot parse /proc/{pid}/stat"))
}

/// CPU seconds per thread name (threads of the same name summed: the tokio workers,
/// rayon's pool, …). A thread that ended is missing from later readings.
pub fn thread_cpu_seconds(pid: u32) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(text) = std::fs::read_to_string(task?.path().join("stat")) else { continue };
        if let Some((comm, s)) = stat_seconds(&text) {
            *out.entry(comm).or_insert(0.0) += s;
        }
    }
    Ok(out)
}

/// The `top` busiest thread groups between two readings (by name, the numbered
/// threads of a pool together) in cores, e.g. `visionq-pre 7.9, tokio-rt-worker 2.1`.
pub fn busiest(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, secs: f64, top: usize) -> String {
    let group = |name: &str| name.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches('-').to_string();
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for (name, s) in after {
        *sums.entry(group(name)).or_default() += s - before.get(name).copied().unwrap_or(0.0);
    }
    let mut groups: Vec<(String, f64)> = sums.into_iter().map(|(n, s)| (n, s / secs)).collect();
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    groups.iter().take(top).map(|(n, c)| format!("{n} {c:.2}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_whose_name_has_spaces_and_parens() {
        let line = "1234 (tokio (rt) w) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        let (comm, secs) = stat_seconds(line).unwrap();
        assert_eq!(comm, "tokio (rt) w");
        assert!((secs - 3.0).abs() < 1e-9, "{secs}");
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        assert!(!thread_cpu_seconds(me).unwrap().is_empty());
    }
}
