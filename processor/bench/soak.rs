//! `vigil bench --soak DURATION`: a steady stream through a real broker for
//! DURATION while `vigil run` reads it in a process of its own; its
//! resident set and live heap sampled every 10 s into a CSV and an SVG
//! chart, the violations topic checked against the generator's truth at
//! the end. The truth and the ids read back live in this process, apart
//! from what is measured.
//!
//! Event time runs fast ([`DAY_S`] wall seconds per generated day) so that
//! the longest retention is reached early and the rest of the run measures
//! memory while eviction keeps pace with arrival: the steady state a
//! long-running deployment lives in.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::broker::Broker;
use super::child::{Child, Violations};
use crate::controls::builtin_sources;
use crate::embedded::{paced_producer, send_paced, Record};
use crate::generate::{generate, records, Encoding, GenConfig};
use crate::pipeline::wall_ms;
use crate::schema::Catalog;

/// Wall seconds per generated day: AC-01's 90-day lookback is reached in
/// the first 15 minutes.
const DAY_S: u64 = 10;
const DAY_MS: i64 = 86_400_000;
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// Longest wait, once everything is sent, for Vigil to read and decide it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

/// One sample of the run.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub seconds: f64,
    pub rss_bytes: u64,
    pub heap_bytes: Option<i64>,
    pub produced: u64,
    pub consumed: u64,
    pub violations: usize,
    /// Violation and evidence ids Vigil holds against publishing twice.
    pub held_ids: u64,
}

/// Memory over the samples taken after warm-up.
#[derive(Debug, Default, Serialize)]
pub struct Spread {
    pub samples: usize,
    pub mean_bytes: f64,
    pub min_bytes: f64,
    pub max_bytes: f64,
    /// Largest distance of a sample from the mean, per cent of the mean.
    pub spread_pct: f64,
}

impl Spread {
    fn of(values: impl Iterator<Item = f64>) -> Option<Spread> {
        let values: Vec<f64> = values.collect();
        if values.is_empty() {
            return None;
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let spread_pct = (max - mean).max(mean - min) / mean * 100.0;
        Some(Spread { samples: values.len(), mean_bytes: mean, min_bytes: min, max_bytes: max, spread_pct })
    }
}

#[derive(Debug, Serialize)]
pub struct SoakRun {
    pub seconds: f64,
    pub events_per_s: usize,
    pub events: u64,
    /// Seconds until event time has passed the longest retention (every
    /// table evicts from then on), plus a generated day.
    pub warmup_s: f64,
    pub rss_after_warmup: Option<Spread>,
    pub heap_after_warmup: Option<Spread>,
    pub expected: usize,
    pub missing: usize,
    pub unexpected: usize,
    pub duplicates: usize,
    pub exact: bool,
    /// A few of the missing and unexpected violation ids.
    pub examples: Vec<String>,
    /// The crash (kill -9) and restart after the stream, or why it failed
    /// (which makes the run inexact).
    pub restart: Option<Restart>,
    pub restart_error: Option<String>,
    pub samples: Vec<Sample>,
}

/// Streams generated days at `rate` events per second for `duration`
/// through `broker` into a Vigil in this process, sampling its memory, and
/// writes the samples to `csv` and a chart of them beside it (`.svg`).
pub async fn soak(
    vigil: &Path,
    broker: &Broker,
    duration: Duration,
    rate: usize,
    seed: u64,
    csv: &Path,
) -> anyhow::Result<SoakRun> {
    let config = broker.topics("soak").await?;
    let catalog = Arc::new(Catalog::builtin().map_err(anyhow::Error::msg)?);
    let days = duration.as_secs().div_ceil(DAY_S).max(1);
    let per_day = rate * DAY_S as usize;
    // The stream ends two days ago: once it stops, the idle partitions'
    // watermark follows the wall clock and every decision falls due.
    let first_day_ms = (wall_ms() / DAY_MS - days as i64 - 2) * DAY_MS;
    let retention_ms = builtin_sources()
        .iter()
        .filter_map(|s| crate::controls::parse_meta(&s.sql).ok())
        .map(|m| crate::duration::millis(m.wait() + m.lookback))
        .max()
        .unwrap_or(0);
    let warmup_s = ((retention_ms.max(0) as u64).div_ceil(DAY_MS as u64) + 1) as f64 * DAY_S as f64;

    let produced = Arc::new(AtomicU64::new(0));
    let producing = tokio::spawn({
        let (bootstrap, produced, topics) = (broker.bootstrap.clone(), produced.clone(), config.input_topics.clone());
        async move {
            let producer = paced_producer(&bootstrap)?;
            let make = move |day: u64| {
                let (catalog, topics) = (catalog.clone(), topics.clone());
                tokio::task::spawn_blocking(move || {
                    generated_day(&catalog, &topics, seed, day, per_day, first_day_ms + day as i64 * DAY_MS)
                })
            };
            let mut expected = HashSet::new();
            let mut next = Some(make(0));
            for day in 0..days {
                let Some(generating) = next.take() else { break };
                let (records, truth) = generating.await??;
                next = (day + 1 < days).then(|| make(day + 1));
                send_paced(&producer, &records, rate).await?;
                produced.fetch_add(records.len() as u64, Ordering::Relaxed);
                expected.extend(truth.iter().filter_map(|id| u128::from_str_radix(id, 16).ok()));
            }
            anyhow::Ok(expected)
        }
    });
    // Vigil starts once the first day is on the broker: a partition with
    // nothing to read is idle and its watermark follows the wall clock,
    // ahead of every generated event, which would all arrive late.
    while produced.load(Ordering::Relaxed) == 0 {
        if producing.is_finished() {
            producing.await??;
            anyhow::bail!("the producer stopped before it sent a day");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = csv.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // A partition's fetch may run ahead of another's by a second or two of
    // wall time; a generated day of lateness (DAY_S of it) keeps that skew
    // from being taken for late events.
    let mut child = Child::start(vigil, &config, "1d", dir, "soak-vigil")?;
    let found = Violations::read(&broker.bootstrap, &config.violations_topic)?;

    // Written as the samples are taken, so a run that fails keeps them.
    let mut csv_file = CsvFile::create(csv)?;
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut last = super::child::Scrape::default();
    let mut sample = |child: &Child| {
        last = child.scrape().unwrap_or_else(|| last.clone());
        let s = Sample {
            seconds: started.elapsed().as_secs_f64(),
            rss_bytes: child.rss_bytes(),
            heap_bytes: last.heap_bytes,
            produced: produced.load(Ordering::Relaxed),
            consumed: last.consumed,
            violations: found.len(),
            held_ids: last.held_ids,
        };
        eprintln!(
            "soak: {:>5.0} s  rss {:>6.0} MiB  heap {:>6} MiB  produced {:>9}  consumed {:>9}  violations {}  held ids {}",
            s.seconds,
            s.rss_bytes as f64 / MIB,
            s.heap_bytes.map_or("-".into(), |h| format!("{:.0}", h as f64 / MIB)),
            s.produced,
            s.consumed,
            s.violations,
            s.held_ids
        );
        csv_file.row(&s);
        samples.push(s);
        last.clone()
    };
    let mut next_sample = tokio::time::Instant::now();
    let stopped = |child: &mut Child| format!("vigil stopped during the soak: see {}", child.log.display());
    while !producing.is_finished() {
        anyhow::ensure!(!child.exited(), stopped(&mut child));
        sample(&child);
        next_sample += SAMPLE_EVERY;
        tokio::time::sleep_until(next_sample).await;
    }
    let expected = producing.await??;
    let total = produced.load(Ordering::Relaxed);
    // Drain: everything read, nothing pending, every expected violation out
    // (or the timeout), then a few seconds for any unexpected one.
    let drained = Instant::now() + DRAIN_TIMEOUT;
    let mut s = sample(&child);
    loop {
        if (s.consumed >= total && s.pending_triggers == 0 && found.len() >= expected.len()) || Instant::now() > drained
        {
            break;
        }
        anyhow::ensure!(!child.exited(), stopped(&mut child));
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tokio::time::Instant::now() >= next_sample {
            s = sample(&child);
            next_sample += SAMPLE_EVERY;
        } else {
            s = child.scrape().unwrap_or(s);
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    sample(&child);
    // A crash at the end: the restarted Vigil replays from the committed
    // offsets what it still retains, and must publish none of it again,
    // though it has forgotten the ids no replay can decide (see
    // `published`).
    child.kill();
    let restarted = restart(vigil, &config, dir).await;

    let seen = found.finish()?;
    let missing = expected.iter().filter(|id| !seen.contains_key(id)).count();
    let unexpected = seen.keys().filter(|id| !expected.contains(id)).count();
    // The first few of each kind, to look into (in `vigil verify` or kcat).
    let mut examples: Vec<String> =
        seen.keys().filter(|id| !expected.contains(id)).map(|id| format!("unexpected {id:032x}")).take(10).collect();
    examples
        .extend(expected.iter().filter(|id| !seen.contains_key(id)).map(|id| format!("missing {id:032x}")).take(10));
    let duplicates = seen.values().map(|n| *n as usize - 1).sum();
    let steady = || samples.iter().filter(|s| s.seconds >= warmup_s);
    let run = SoakRun {
        seconds: started.elapsed().as_secs_f64(),
        events_per_s: rate,
        events: total,
        warmup_s,
        rss_after_warmup: Spread::of(steady().map(|s| s.rss_bytes as f64)),
        heap_after_warmup: Spread::of(steady().filter_map(|s| s.heap_bytes).map(|h| h as f64)),
        expected: expected.len(),
        missing,
        unexpected,
        duplicates,
        exact: missing == 0 && unexpected == 0 && duplicates == 0 && restarted.is_ok(),
        restart_error: restarted.as_ref().err().map(|e| format!("{e:#}")),
        restart: restarted.ok(),
        examples,
        samples,
    };
    let chart = csv.with_extension("svg");
    std::fs::write(&chart, super::chart::svg(&run)).map_err(|e| anyhow::anyhow!("{}: {e}", chart.display()))?;
    Ok(run)
}

const MIB: f64 = 1024.0 * 1024.0;

/// What the restart after the soak's crash read and held.
#[derive(Debug, Serialize)]
pub struct Restart {
    /// Events read again from the committed offsets.
    pub replayed: u64,
    /// Ids held once it had caught up.
    pub held_ids: u64,
    pub seconds_to_caught_up: f64,
}

/// Starts Vigil again and waits until it has caught up with nothing pending
/// (twice in a row), then stops it.
async fn restart(vigil: &Path, config: &crate::config::Config, dir: &Path) -> anyhow::Result<Restart> {
    let mut child = Child::start(vigil, config, "1d", dir, "soak-vigil-restarted")?;
    let started = Instant::now();
    let deadline = started + DRAIN_TIMEOUT;
    let mut settled = 0;
    let mut last = super::child::Scrape::default();
    while settled < 2 {
        anyhow::ensure!(!child.exited(), "vigil stopped after its restart: see {}", child.log.display());
        anyhow::ensure!(
            Instant::now() < deadline,
            "vigil did not catch up after its restart: see {}",
            child.log.display()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        last = child.scrape().unwrap_or(last);
        settled = if last.caught_up && last.pending_triggers == 0 { settled + 1 } else { 0 };
    }
    let seconds_to_caught_up = started.elapsed().as_secs_f64();
    // Anything it would publish again is out within a few ticks.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let last = child.scrape().unwrap_or(last);
    let log = child.log.clone();
    let exit = child.stop()?;
    anyhow::ensure!(exit.success(), "vigil exited {exit} when stopped: see {}", log.display());
    Ok(Restart { replayed: last.consumed, held_ids: last.held_ids, seconds_to_caught_up })
}

/// One generated day, encoded for the broker, and the ids of the
/// violations it holds. Each day has its own seed and story numbers, so
/// days share no deploy, change or pull request.
fn generated_day(
    catalog: &Catalog,
    topics: &[String; 4],
    seed: u64,
    day: u64,
    events: usize,
    start_ms: i64,
) -> anyhow::Result<(Vec<Record>, Vec<String>)> {
    let mut gen = GenConfig::new(events, seed.wrapping_mul(1_000_003).wrapping_add(day), 0);
    gen.days = 1;
    gen.end_ms = start_ms + DAY_MS;
    gen.first_story = day * events as u64;
    let (stream, truth) = generate(&gen);
    let records = records(catalog, &stream, Encoding::Avro, topics).map_err(anyhow::Error::msg)?;
    Ok((records, truth.violations.into_iter().map(|v| v.id).collect()))
}

/// The samples' CSV, a row appended (and flushed) per sample.
struct CsvFile {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
}

impl CsvFile {
    fn create(path: &Path) -> anyhow::Result<CsvFile> {
        let mut file = std::fs::File::create(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        writeln!(file, "seconds,rss_bytes,heap_bytes,produced,consumed,violations,held_ids")?;
        Ok(CsvFile { path: path.to_path_buf(), file: Some(file) })
    }

    /// Appends `s`; a write that fails is said once and stops the CSV, not
    /// the soak.
    fn row(&mut self, s: &Sample) {
        let Some(file) = &mut self.file else { return };
        let heap = s.heap_bytes.map_or(String::new(), |h| h.to_string());
        let line = format!(
            "{:.1},{},{heap},{},{},{},{}",
            s.seconds, s.rss_bytes, s.produced, s.consumed, s.violations, s.held_ids
        );
        if let Err(e) = writeln!(file, "{line}") {
            eprintln!("soak: {}: {e}; no more samples are written to it", self.path.display());
            self.file = None;
        }
    }
}
