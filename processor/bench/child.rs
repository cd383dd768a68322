//! Vigil as a user runs it — `vigil run` in a process of its own — and the
//! violations topic read back beside it: what the soak measures, so that
//! the memory sampled is Vigil's alone, not the harness's bookkeeping.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::Config;

/// `vigil run` on a config written for it; killed when dropped.
pub struct Child {
    child: std::process::Child,
    metrics_port: u16,
    pub log: PathBuf,
}

/// What one scrape of the child's /metrics says.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub heap_bytes: Option<i64>,
    pub consumed: u64,
    pub pending_triggers: u64,
    pub held_ids: u64,
    pub caught_up: bool,
}

impl Child {
    /// Writes `config` (and `allowed_lateness`) as TOML into `dir` and
    /// starts `vigil` on it, its log beside it (`NAME.log`).
    pub fn start(
        vigil: &Path,
        config: &Config,
        allowed_lateness: &str,
        dir: &Path,
        name: &str,
    ) -> anyhow::Result<Child> {
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let topics = &config.input_topics;
        let text = format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"{}\"\n\n\
             [topics]\nchange = \"{}\"\nci = \"{}\"\naccess = \"{}\"\ndeploy = \"{}\"\n\
             violations = \"{}\"\ndead_letter = \"{}\"\nevidence = \"{}\"\n\n\
             [time]\ntick = \"100ms\"\nidle_timeout = \"2s\"\nallowed_lateness = \"{allowed_lateness}\"\n\n\
             [metrics]\naddr = \"127.0.0.1:{metrics_port}\"\n\n{}",
            config.bootstrap_servers,
            config.group_id,
            topics[0],
            topics[1],
            topics[2],
            topics[3],
            config.violations_topic,
            config.dead_letter_topic,
            config.evidence_topic,
            crate::generate::identities_toml()
        );
        let path = dir.join("soak-vigil.toml");
        std::fs::write(&path, text).with_context(|| path.display().to_string())?;
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).with_context(|| log.display().to_string())?;
        let child = Command::new(vigil)
            .args(["run", "--config"])
            .arg(&path)
            .env("VIGIL_LOG", "warn,vigil=info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", vigil.display()))?;
        Ok(Child { child, metrics_port, log })
    }

    /// Whether it has exited (it should not, until stopped).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Its resident set, from `/proc/PID/statm`.
    pub fn rss_bytes(&self) -> u64 {
        rss_of(&format!("/proc/{}/statm", self.child.id()))
    }

    /// Its /metrics; `None` while they cannot be read.
    pub fn scrape(&self) -> Option<Scrape> {
        let text = ureq::get(&format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .config()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        let sum = |name: &str| sum_of(&text, name);
        Some(Scrape {
            heap_bytes: sum("vigil_heap_bytes").map(|v| v as i64),
            consumed: sum("vigil_events_consumed_total").unwrap_or(0.0) as u64,
            pending_triggers: sum("vigil_pending_triggers").unwrap_or(0.0) as u64,
            held_ids: sum("vigil_published_ids_held").unwrap_or(0.0) as u64,
            caught_up: sum("vigil_caught_up") == Some(1.0),
        })
    }

    /// SIGKILL: a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, and its exit status once it has stopped.
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        // SAFETY: signals a child this struct owns and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        Ok(self.child.wait()?)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pages resident, in bytes, from a `statm` file.
pub fn rss_of(statm: &str) -> u64 {
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    std::fs::read_to_string(statm)
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok()))
        .map_or(0, |pages| pages * page)
}

/// The sum of every sample of metric `name` in a Prometheus text page.
fn sum_of(text: &str, name: &str) -> Option<f64> {
    let samples: Vec<f64> = text
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// The violations topic read from its beginning on a thread of its own:
/// how many records each id has (ids are 128-bit: 16 bytes each).
pub struct Violations {
    counts: Arc<Mutex<HashMap<u128, u32>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Violations {
    pub fn read(bootstrap: &str, topic: &str) -> anyhow::Result<Violations> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "vigil-soak-reader")
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut list = TopicPartitionList::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            list.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
        consumer.assign(&list)?;
        let (counts, stop): (Arc<Mutex<HashMap<u128, u32>>>, Arc<AtomicBool>) = Default::default();
        let thread = std::thread::spawn({
            let (counts, stop) = (counts.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match consumer.poll(Duration::from_millis(200)) {
                        Some(Ok(m)) => {
                            let id = m.key().and_then(|k| std::str::from_utf8(k).ok());
                            let id = id.and_then(|k| u128::from_str_radix(k, 16).ok());
                            let id =
                                id.with_context(|| format!("a violation without an id at offset {}", m.offset()))?;
                            *counts.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default() += 1;
                        }
                        Some(Err(e)) => tracing::warn!(error = %e, "reading the violations topic"),
                        None => {}
                    }
                }
                Ok(())
            }
        });
        Ok(Violations { counts, stop, thread })
    }

    /// Distinct ids read so far.
    pub fn len(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Stops reading; every id read and its number of records.
    pub fn finish(self) -> anyhow::Result<HashMap<u128, u32>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().map_err(|_| anyhow::anyhow!("the violations reader panicked"))??;
        Ok(std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_sample_of_a_metric_and_only_of_it() {
        let text = "# HELP vigil_events_consumed_total Events.\n\
                    vigil_events_consumed_total{topic=\"ci\"} 3\n\
                    vigil_events_consumed_total{topic=\"deploy\"} 4\n\
                    vigil_events_consumed_totally 100\n\
                    vigil_heap_bytes 1.5e3\n";
        assert_eq!(sum_of(text, "vigil_events_consumed_total"), Some(7.0));
        assert_eq!(sum_of(text, "vigil_heap_bytes"), Some(1500.0));
        assert_eq!(sum_of(text, "vigil_pending_triggers"), None);
    }
}
