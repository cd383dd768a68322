//! CPU time of this process's threads, by thread name: where a read's CPU
//! went (the reader thread, librdkafka's broker threads, the decode pool),
//! with nanosecond resolution from `/proc/self/task/*/schedstat`.

use std::collections::BTreeMap;

/// CPU seconds so far of each live thread, keyed by thread id, with its name.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<u32, (String, f64)>);

impl Snapshot {
    /// The threads alive now (none where `/proc` is absent).
    pub fn take() -> Snapshot {
        let mut threads = BTreeMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Snapshot(threads) };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else { continue };
            let path = task.path();
            let on_cpu_ns = std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()));
            let name = std::fs::read_to_string(path.join("comm")).map(|n| n.trim().to_string());
            if let (Some(ns), Ok(name)) = (on_cpu_ns, name) {
                threads.insert(tid, (name, ns as f64 / 1e9));
            }
        }
        Snapshot(threads)
    }

    /// CPU seconds spent since `earlier`, summed by thread name with digits
    /// dropped (`rdk:broker1` and `rdk:broker2` are one kind), largest
    /// first. Threads that ended meanwhile are not counted.
    pub fn since(&self, earlier: &Snapshot) -> Vec<(String, f64)> {
        let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
        for (tid, (name, now)) in &self.0 {
            let before = earlier.0.get(tid).filter(|(n, _)| n == name).map_or(0.0, |(_, s)| *s);
            let kind: String = name.chars().filter(|c| !c.is_ascii_digit()).collect();
            *by_kind.entry(kind).or_default() += now - before;
        }
        let mut kinds: Vec<(String, f64)> = by_kind.into_iter().filter(|(_, s)| *s >= 0.001).collect();
        kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
        kinds
    }
}

/// Idle CPU seconds of the whole machine so far (all cores), from
/// `/proc/stat`; 0 where it is absent.
pub fn idle_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next().filter(|l| l.starts_with("cpu ")) else { return 0.0 };
    // user nice system idle iowait …, in clock ticks (100 a second here).
    let fields: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    (fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0)) / ticks_per_second()
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}
