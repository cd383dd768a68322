//! Measurements through a real broker: Vigil's read rate against a bare
//! rdkafka consumer's on the same topics, and decision latency in a steady
//! stream. The broker is `--brokers`, or Apache Kafka started for the run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use tokio::sync::watch;

use super::threads::{idle_seconds, Snapshot};
use crate::apache_kafka::{Cluster, Layout};
use crate::config::{Config, RawConfig};
use crate::controls::builtin_sources;
use crate::embedded::produce_all;
use crate::generate::{generate, records, Encoding, GenConfig};
use crate::metrics::Metrics;
use crate::pipeline::{wall_ms, Pipeline, Status};
use crate::schema::Catalog;

/// Partitions of every topic the benchmarks create.
pub const PARTITIONS: i32 = 3;

/// The broker the measurements run against.
pub struct Broker {
    pub bootstrap: String,
    /// `kafka-4.1.1` for the broker started for the run; `external` for
    /// `--brokers`, whose software the run cannot tell.
    pub label: String,
    /// Kept until the measurements end: dropping it stops the broker.
    _cluster: Option<Cluster>,
}

impl Broker {
    /// `brokers` when given, else a single-node Apache Kafka started for the
    /// run (its jars fetched with Maven the first time).
    pub fn start(brokers: Option<String>) -> anyhow::Result<Broker> {
        if let Some(bootstrap) = brokers {
            return Ok(Broker { bootstrap, label: "external".into(), _cluster: None });
        }
        let cluster = Cluster::start(Layout::single())
            .context("no broker: pass --brokers HOST:PORT, or let the bench start Apache Kafka (needs java and mvn)")?;
        Ok(Broker { bootstrap: cluster.bootstrap(), label: cluster.label(), _cluster: Some(cluster) })
    }

    /// A fresh set of topics (named after `run`) and a config reading them.
    pub(super) async fn topics(&self, run: &str) -> anyhow::Result<Config> {
        let prefix = format!("bench-{}-{run}-", std::process::id());
        let mut raw = RawConfig { identities: crate::generate::identities(), ..RawConfig::default() };
        raw.kafka.bootstrap_servers = self.bootstrap.clone();
        raw.kafka.group_id = format!("{prefix}vigil");
        raw.time.tick = Some("100ms".into());
        raw.time.idle_timeout = Some("2s".into());
        let t = &mut raw.topics;
        for (slot, name) in [
            (&mut t.change, "change"),
            (&mut t.ci, "ci"),
            (&mut t.access, "access"),
            (&mut t.deploy, "deploy"),
            (&mut t.violations, "violations"),
            (&mut t.dead_letter, "dead-letter"),
            (&mut t.evidence, "evidence"),
        ] {
            *slot = Some(format!("{prefix}{name}"));
        }
        let config = Config::validate(raw).map_err(anyhow::Error::msg)?;
        let admin: AdminClient<_> =
            ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().context("admin client")?;
        let mut names: Vec<String> = config.input_topics.to_vec();
        names.extend([
            config.violations_topic.clone(),
            config.dead_letter_topic.clone(),
            config.evidence_topic.clone(),
        ]);
        let new: Vec<NewTopic> =
            names.iter().map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1))).collect();
        for result in admin.create_topics(&new, &AdminOptions::new()).await? {
            result.map_err(|(topic, e)| anyhow::anyhow!("creating {topic}: {e}"))?;
        }
        Ok(config)
    }
}

/// Rounds of the end-to-end comparison: each reads the stream with a bare
/// consumer and then with Vigil; one more bare read closes the last round.
/// The figures are medians, so a single read disturbed by the host (or by
/// the broker's JIT, which compiles its fetch path during the first reads
/// and once took 18 % of both cores while Vigil read) does not decide them.
const E2E_ROUNDS: usize = 3;

#[derive(Debug, Serialize)]
pub struct E2eRun {
    pub events: usize,
    /// Bare consumer, first to last message, each read in run order (after a
    /// warm-up read that is not counted).
    pub bare_seconds: Vec<f64>,
    pub bare_events_per_s: f64,
    /// Vigil, first message read to the last one decoded, stored and offered
    /// to the controls (decisions run behind, in the same process), each
    /// read in run order, each a new consumer group.
    pub vigil_seconds: Vec<f64>,
    pub vigil_events_per_s: f64,
    /// Median bare seconds ÷ median Vigil seconds.
    pub ratio: f64,
    /// CPU seconds this process spent per million events read, all its
    /// threads (librdkafka's included), bare consumer and Vigil (medians):
    /// on a host with few cores, what bounds the ratio.
    pub bare_cpu_s_per_million: f64,
    pub vigil_cpu_s_per_million: f64,
    /// Cores the machine left idle, on average, in each bare and each Vigil
    /// read: near 0 when the reads are bound by CPU.
    pub bare_idle_cores: Vec<f64>,
    pub vigil_idle_cores: Vec<f64>,
    /// CPU seconds by thread name in the last bare and the last Vigil read.
    pub bare_cpu_by_thread: Vec<(String, f64)>,
    pub vigil_cpu_by_thread: Vec<(String, f64)>,
}

/// One read of the whole stream: seconds from its first message to its
/// last, the process's CPU seconds meanwhile, and where they went.
struct Read {
    seconds: f64,
    cpu: f64,
    threads: Vec<(String, f64)>,
    /// Cores the machine left idle meanwhile, on average.
    idle_cores: f64,
}

/// Produces `events` generated events, then reads them once with a bare
/// consumer to warm the broker, and then in `E2E_ROUNDS` rounds of a bare
/// read and a Vigil read, with one bare read after the last.
pub async fn e2e(broker: &Broker, events: usize, seed: u64) -> anyhow::Result<E2eRun> {
    let config = broker.topics("e2e").await?;
    let catalog = Catalog::builtin().map_err(anyhow::Error::msg)?;
    let (stream, _) = generate(&GenConfig::new(events, seed, wall_ms()));
    let records = records(&catalog, &stream, Encoding::Avro, &config.input_topics).map_err(anyhow::Error::msg)?;
    drop(stream);
    produce_all(&broker.bootstrap, &records).await?;
    drop(records);
    bare_read(&config, events)?;
    let (mut bare, mut vigil): (Vec<Read>, Vec<Read>) = (Vec::new(), Vec::new());
    for round in 0..E2E_ROUNDS {
        bare.push(bare_read(&config, events)?);
        let mut config = config.clone();
        config.group_id = format!("{}-{round}", config.group_id);
        vigil.push(vigil_read(&config, events).await?);
    }
    bare.push(bare_read(&config, events)?);
    let (bare_s, bare_cpu) = (median(bare.iter().map(|r| r.seconds)), median(bare.iter().map(|r| r.cpu)));
    let (vigil_s, vigil_cpu) = (median(vigil.iter().map(|r| r.seconds)), median(vigil.iter().map(|r| r.cpu)));
    // A few batches' worth is read in about one fetch: no rate to speak of.
    anyhow::ensure!(
        bare_s.min(vigil_s) >= 0.2,
        "{events} events were read in {bare_s:.3} s (bare) and {vigil_s:.3} s (vigil), too fast to time; \
         use --e2e-events of 200000 or more"
    );
    Ok(E2eRun {
        events,
        bare_seconds: bare.iter().map(|r| r.seconds).collect(),
        bare_events_per_s: events as f64 / bare_s,
        vigil_seconds: vigil.iter().map(|r| r.seconds).collect(),
        vigil_events_per_s: events as f64 / vigil_s,
        ratio: bare_s / vigil_s,
        bare_cpu_s_per_million: bare_cpu * 1e6 / events as f64,
        vigil_cpu_s_per_million: vigil_cpu * 1e6 / events as f64,
        bare_idle_cores: bare.iter().map(|r| r.idle_cores).collect(),
        vigil_idle_cores: vigil.iter().map(|r| r.idle_cores).collect(),
        bare_cpu_by_thread: bare.pop().map(|r| r.threads).unwrap_or_default(),
        vigil_cpu_by_thread: vigil.pop().map(|r| r.threads).unwrap_or_default(),
    })
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Vigil's pipeline reading the stream from the beginning in a group of its
/// own until `events` were taken in: seconds from the first to the last,
/// and the process's CPU seconds meanwhile.
async fn vigil_read(config: &Config, events: usize) -> anyhow::Result<Read> {
    let pipeline = Pipeline::new(config.clone(), &builtin_sources(), Metrics::new()).await?;
    let mut status = pipeline.status();
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(pipeline.run(stopped));
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut from = None;
    let read = loop {
        let s: Status = status.borrow_and_update().clone();
        if s.consumed > 0 {
            from.get_or_insert_with(|| (cpu_seconds(), Snapshot::take(), idle_seconds()));
        }
        if s.consumed >= events as u64 {
            let (cpu, threads, idle) = from.unwrap_or_default();
            let seconds = match (s.first_consumed_at, s.last_consumed_at) {
                (Some(first), Some(last)) => (last - first).as_secs_f64(),
                _ => 0.0,
            };
            break Read {
                seconds,
                cpu: cpu_seconds() - cpu,
                threads: Snapshot::take().since(&threads),
                idle_cores: (idle_seconds() - idle) / seconds.max(1e-3),
            };
        }
        anyhow::ensure!(!running.is_finished() && Instant::now() < deadline, "vigil did not read the stream: {s:?}");
        let _ = tokio::time::timeout(Duration::from_millis(5), status.changed()).await;
    };
    let _ = stop.send(true);
    running.await??;
    Ok(read)
}

/// CPU seconds (user and system) of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Reads every partition of the input topics from the beginning until
/// `events` messages arrived; seconds from the first to the last, and the
/// process's CPU seconds meanwhile.
fn bare_read(config: &Config, events: usize) -> anyhow::Result<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", format!("{}-bare-{}", config.group_id, wall_ms()))
        .set("enable.auto.commit", "false")
        // As Vigil's source fetches.
        .set("fetch.wait.max.ms", crate::source::FETCH_WAIT_MAX_MS)
        .set("fetch.queue.backoff.ms", crate::source::FETCH_QUEUE_BACKOFF_MS)
        .create()?;
    let mut list = TopicPartitionList::new();
    for topic in &config.input_topics {
        for p in 0..PARTITIONS {
            list.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&list)?;
    let (mut read, mut bytes, mut started, mut from) = (0usize, 0usize, None, (0.0, Snapshot::default(), 0.0));
    let deadline = Instant::now() + Duration::from_secs(600);
    while read < events {
        anyhow::ensure!(Instant::now() < deadline, "the bare consumer read {read} of {events} messages");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            if started.is_none() {
                started = Some(Instant::now());
                from = (cpu_seconds(), Snapshot::take(), idle_seconds());
            }
            bytes += rdkafka::Message::payload(&m).map_or(0, <[u8]>::len);
            read += 1;
        }
    }
    std::hint::black_box(bytes);
    let seconds = started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Ok(Read {
        seconds,
        cpu: cpu_seconds() - from.0,
        threads: Snapshot::take().since(&from.1),
        idle_cores: (idle_seconds() - from.2) / seconds.max(1e-3),
    })
}

/// A pipeline started on `config` in this process, calling `on_violation`
/// with each violation it publishes, once it decides: it holds its
/// partitions and has read the violations topic on. Its status, the switch
/// that stops it, and its task.
pub(super) async fn deciding(
    config: &Config,
    on_violation: impl Fn(&crate::violation::Violation) + Send + 'static,
) -> anyhow::Result<(watch::Receiver<Status>, watch::Sender<bool>, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let mut pipeline = Pipeline::new(config.clone(), &builtin_sources(), Metrics::new()).await?;
    pipeline.on_violation(on_violation);
    let mut status = pipeline.status();
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(pipeline.run(stopped));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !status.borrow_and_update().deciding {
        anyhow::ensure!(Instant::now() < deadline && !running.is_finished(), "vigil did not start");
        let _ = tokio::time::timeout(Duration::from_millis(100), status.changed()).await;
    }
    Ok((status, stop, running))
}

#[derive(Debug, Serialize)]
pub struct LatencyRun {
    pub events_per_s: f64,
    pub seconds: f64,
    pub decisions: usize,
    /// Decisions whose due time the stream's end, not its flow, released.
    pub not_measured: usize,
    pub p50_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
}

/// Produces a generated stream at a steady `rate` for `seconds` while Vigil
/// reads it. A decision's latency is the time from the moment the stream
/// allowed it — the send of the first event on every partition timed at or
/// after its due time (trigger + grace or deadline) plus the allowed
/// lateness — to its publication (acknowledged by the broker).
pub async fn latency(broker: &Broker, rate: usize, seconds: u64, seed: u64) -> anyhow::Result<LatencyRun> {
    let config = broker.topics("latency").await?;
    let catalog = Catalog::builtin().map_err(anyhow::Error::msg)?;
    let events = rate * seconds as usize;
    // One generated day sent in `seconds`: event time runs ~1,440× faster
    // than the wall clock at the defaults. The day starts now, as a live
    // stream's does: one wholly behind the wall clock would be all late (an
    // idle topic's watermark follows the wall clock), decided on arrival,
    // and measure nothing.
    let mut gen = GenConfig::new(events, seed, wall_ms());
    gen.days = 1;
    gen.end_ms = wall_ms() + 86_400_000 + 60_000;
    let (stream, _) = generate(&gen);
    // At that pace 5 minutes of event time pass in 0.2 s, less than the
    // skew between the partitions' fetches; allow an hour (2.5 s of wall
    // time) so that skew is not taken for late events. Latency is counted
    // from due time plus this lateness, so it does not inflate the figure.
    let mut config = config;
    config.watermarks.allowed_lateness_ms = 3_600_000;
    let times: Vec<i64> = stream.iter().map(|e| e.time_ms).collect();
    let records = records(&catalog, &stream, Encoding::Avro, &config.input_topics).map_err(anyhow::Error::msg)?;
    drop(stream);
    let waits: HashMap<String, i64> = builtin_sources()
        .iter()
        .filter_map(|s| crate::controls::parse_meta(&s.sql).ok())
        .map(|m| (m.id.clone(), crate::duration::millis(m.wait())))
        .collect();
    let published: Arc<Mutex<Vec<(String, i64, Instant)>>> = Arc::default();
    let sink = published.clone();
    // Start once Vigil decides: steady state, not start-up, is measured.
    let (mut status, stop, running) = deciding(&config, move |v| {
        sink.lock().unwrap_or_else(|p| p.into_inner()).push((v.control_id.clone(), v.event_time, Instant::now()))
    })
    .await?;
    let sent = crate::embedded::produce_paced(&broker.bootstrap, &records, rate).await?;
    let lateness = config.watermarks.allowed_lateness_ms;
    let deadline = Instant::now() + Duration::from_secs(seconds.max(60));
    while status.borrow_and_update().consumed < events as u64 {
        let consumed = status.borrow().consumed;
        anyhow::ensure!(
            Instant::now() < deadline && !running.is_finished(),
            "vigil read {consumed} of {events} events within {} s after the last was sent: it does not keep up with {rate} events/s",
            seconds.max(60)
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), status.changed()).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);
    running.await??;
    // Per partition of each topic: event times and send instants, in order.
    let mut by_partition: HashMap<(String, i32), Vec<(i64, Instant)>> = HashMap::new();
    for ((record, time), (partition, at)) in records.iter().zip(&times).zip(&sent) {
        by_partition.entry((record.topic.clone(), *partition)).or_default().push((*time, *at));
    }
    let published = std::mem::take(&mut *published.lock().unwrap_or_else(|p| p.into_inner()));
    let mut latencies = Vec::new();
    for (control, event_time, at) in &published {
        let due = event_time + waits.get(control).copied().unwrap_or(0) + lateness;
        let released = by_partition
            .values()
            .map(|sends| sends.iter().find(|(t, _)| *t >= due).map(|(_, s)| *s))
            .collect::<Option<Vec<Instant>>>()
            .and_then(|s| s.into_iter().max());
        if let Some(released) = released {
            latencies.push(at.saturating_duration_since(released).as_secs_f64());
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)));
    Ok(LatencyRun {
        events_per_s: rate as f64,
        seconds: seconds as f64,
        decisions: latencies.len(),
        not_measured: published.len() - latencies.len(),
        p50_s: pick(0.5).copied().unwrap_or(f64::NAN),
        p99_s: pick(0.99).copied().unwrap_or(f64::NAN),
        max_s: latencies.last().copied().unwrap_or(f64::NAN),
    })
}
