//! `vigil demo`: an embedded broker, a generated stream, the processor over
//! the real Kafka protocol, and a summary against the ground truth.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::config::{Config, RawConfig};
use crate::controls::builtin_sources;
use crate::embedded::{produce_all, read_all, EmbeddedBroker, ReadRecord, Record};
use crate::generate::{bad_record, generate, records, Encoding, GenConfig};
use crate::metrics::Metrics;
use crate::pipeline::{wall_ms, Pipeline, STATUS_POLL};
use crate::schema::Catalog;
use crate::violation::Violation;

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub events: usize,
    pub seed: u64,
    /// Undecodable records mixed into the stream (they go to the dead-letter topic).
    pub bad_records: usize,
    pub encoding: Encoding,
    pub partitions: i32,
    /// Print each violation as it is found.
    pub print: bool,
    pub metrics_addr: Option<SocketAddr>,
    /// Push the violations to this Alertmanager as well.
    pub alertmanager_url: Option<String>,
    /// Write the evidence and violations to a Parquet archive here.
    pub archive: Option<std::path::PathBuf>,
    /// Give up if the stream is not fully decided within this.
    pub timeout: Duration,
}

/// Expected and found count of one control.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ControlCount {
    pub expected: usize,
    pub found: usize,
}

/// The run against the ground truth.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub events: usize,
    pub expected: usize,
    pub found: usize,
    pub missing: usize,
    pub unexpected: usize,
    pub duplicates: usize,
    pub dead_letters: usize,
    pub bad_records: usize,
    /// Evidence records published (one per finished production deploy).
    pub evidence: usize,
    pub elapsed_s: f64,
    pub per_control: BTreeMap<String, ControlCount>,
    #[serde(skip)]
    pub dead_letter_records: Vec<ReadRecord>,
    /// The processor's /metrics text at the end of the run.
    #[serde(skip)]
    pub metrics_text: String,
}

impl Summary {
    pub fn exact(&self) -> bool {
        self.missing == 0 && self.unexpected == 0 && self.duplicates == 0 && self.dead_letters == self.bad_records
    }
}

pub async fn run(options: DemoOptions) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let catalog = Catalog::builtin().map_err(anyhow::Error::msg)?;
    let broker = EmbeddedBroker::start()?;
    let bootstrap = broker.bootstrap_servers();
    let config = demo_config(&bootstrap, options.alertmanager_url.clone())?;
    if let Some(dir) = &options.archive {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    }
    for name in &config.input_topics {
        broker.create_topic(name, options.partitions)?;
    }
    broker.create_topic(&config.violations_topic, options.partitions)?;
    broker.create_topic(&config.dead_letter_topic, 1)?;
    broker.create_topic(&config.evidence_topic, options.partitions)?;

    let (events, truth) = generate(&GenConfig::new(options.events, options.seed, wall_ms()));
    let mut records = records(&catalog, &events, options.encoding, &config.input_topics).map_err(anyhow::Error::msg)?;
    for i in 0..options.bad_records {
        let (topic, payload, _) = bad_record(i, &records[i % records.len().max(1)].payload);
        // Spread them through the stream, each after a good record of any topic.
        let at = (i + 1) * records.len() / (options.bad_records + 1);
        records.insert(
            at.min(records.len()),
            Record {
                topic: config.input_topics[topic.index()].clone(),
                key: "bad".into(),
                payload,
                headers: Vec::new(),
            },
        );
    }
    produce_all(&bootstrap, &records).await?;
    eprintln!(
        "demo: produced {} events ({} undecodable) to an embedded broker at {bootstrap}; {} violations injected",
        events.len(),
        options.bad_records,
        truth.violations.len()
    );

    let metrics = Metrics::new();
    if let Some(addr) = options.metrics_addr {
        let m = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(addr, m).await {
                tracing::error!(%addr, error = %e, "metrics endpoint failed");
            }
        });
    }
    let mut pipeline = Pipeline::new(config.clone(), &builtin_sources(), metrics.clone()).await?;
    if options.print {
        pipeline.on_violation(|v: &Violation| {
            println!("{:<7} {:<8} {:<10} {}", v.control_id, v.severity, v.service, v.message);
        });
    }
    let mut status = pipeline.status();
    let (stop_tx, stop_rx) = watch::channel(false);
    let running = tokio::spawn(pipeline.run(stop_rx));
    let total = records.len() as u64;
    let deadline = Instant::now() + options.timeout;
    loop {
        let s = status.borrow_and_update().clone();
        if s.consumed >= total
            && s.pending_triggers == 0
            && s.caught_up
            && s.watermark.is_some_and(|w| w > truth_end(&events))
        {
            break;
        }
        if running.is_finished() || Instant::now() > deadline {
            let _ = stop_tx.send(true);
            let outcome = running.await;
            anyhow::bail!("the pipeline stopped before deciding the stream (status {s:?}, outcome {outcome:?})");
        }
        let _ = tokio::time::timeout(STATUS_POLL * 4, status.changed()).await;
    }
    let _ = stop_tx.send(true);
    running.await??;

    let published = read_all(&bootstrap, &config.violations_topic, Duration::from_secs(60))?;
    let dead = read_all(&bootstrap, &config.dead_letter_topic, Duration::from_secs(60))?;
    let evidence = read_all(&bootstrap, &config.evidence_topic, Duration::from_secs(60))?;
    if let Some(dir) = &options.archive {
        archive(dir, &catalog, &published, &evidence)?;
    }
    let mut summary = compare(&catalog, &published, &truth.violations)?;
    summary.events = events.len();
    summary.bad_records = options.bad_records;
    summary.dead_letters = dead.len();
    summary.evidence = evidence.len();
    summary.dead_letter_records = dead;
    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.metrics_text = metrics.render();
    Ok(summary)
}

/// Writes what the demo published to a Parquet archive.
fn archive(
    dir: &std::path::Path,
    catalog: &Catalog,
    published: &[ReadRecord],
    evidence: &[ReadRecord],
) -> anyhow::Result<()> {
    let violations = published
        .iter()
        .map(|r| Violation::from_confluent_avro(&catalog.violation, r.payload.as_deref().unwrap_or_default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("violations: {e}"))?;
    let evidence = evidence
        .iter()
        .map(|r| serde_json::from_slice::<crate::evidence::EvidenceRecord>(r.payload.as_deref().unwrap_or_default()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("evidence: {e}"))?;
    let files = crate::archive::write(dir, &evidence, &violations)?;
    eprintln!(
        "demo: archived {} evidence records and {} violations in {} Parquet files under {}",
        evidence.len(),
        violations.len(),
        files.len(),
        dir.display()
    );
    Ok(())
}

fn truth_end(events: &[crate::generate::Event]) -> i64 {
    events.iter().map(|e| e.time_ms).max().unwrap_or(0)
}

/// The configuration the demo runs the processor with.
fn demo_config(bootstrap: &str, alertmanager_url: Option<String>) -> anyhow::Result<Config> {
    let mut raw = RawConfig::default();
    raw.alerts.alertmanager_url = alertmanager_url;
    raw.kafka.bootstrap_servers = bootstrap.to_string();
    raw.kafka.group_id = "vigil-demo".into();
    raw.time.tick = Some("200ms".into());
    raw.time.idle_timeout = Some("2s".into());
    raw.identities = crate::generate::identities();
    raw.decode.max_message_bytes = Some(crate::generate::DEMO_MAX_MESSAGE_BYTES);
    Config::validate(raw).map_err(anyhow::Error::msg)
}

/// Matches published violations against the truth.
fn compare(
    catalog: &Catalog,
    published: &[ReadRecord],
    expected: &[crate::generate::Expected],
) -> anyhow::Result<Summary> {
    let mut seen: HashMap<String, Violation> = HashMap::new();
    let mut duplicates = 0;
    for r in published {
        let payload = r.payload.as_deref().unwrap_or_default();
        let v = Violation::from_confluent_avro(&catalog.violation, payload)
            .map_err(|e| anyhow::anyhow!("violations/{}/{}: {e}", r.partition, r.offset))?;
        // The topic is a changelog keyed by id: a retraction (an amendment)
        // withdraws the violation it names.
        if v.status == "retracted" {
            seen.remove(&v.id);
            continue;
        }
        if seen.insert(v.id.clone(), v).is_some() {
            duplicates += 1;
        }
    }
    let expected_ids: HashSet<&str> = expected.iter().map(|e| e.id.as_str()).collect();
    let mut per_control: BTreeMap<String, ControlCount> = BTreeMap::new();
    for e in expected {
        per_control.entry(e.control.clone()).or_default().expected += 1;
    }
    for v in seen.values() {
        per_control.entry(v.control_id.clone()).or_default().found += 1;
    }
    let missing = expected.iter().filter(|e| !seen.contains_key(&e.id)).count();
    let unexpected: Vec<&Violation> = seen.values().filter(|v| !expected_ids.contains(v.id.as_str())).collect();
    for v in unexpected.iter().take(10) {
        tracing::warn!(id = %v.id, control = %v.control_id, subject = %v.subject, message = %v.message, "unexpected violation");
    }
    for e in expected.iter().filter(|e| !seen.contains_key(&e.id)).take(10) {
        tracing::warn!(id = %e.id, control = %e.control, subject = %e.subject, "missing violation");
    }
    Ok(Summary {
        expected: expected.len(),
        found: seen.len(),
        missing,
        unexpected: unexpected.len(),
        duplicates,
        per_control,
        ..Summary::default()
    })
}

/// Prints the summary table.
pub fn print_summary(s: &Summary) {
    println!();
    println!("control   expected  found");
    for (id, c) in &s.per_control {
        println!("{id:<9} {:>8} {:>6}", c.expected, c.found);
    }
    println!(
        "events={} expected={} found={} missing={} unexpected={} duplicates={} dead_letters={}/{} elapsed={:.1}s",
        s.events,
        s.expected,
        s.found,
        s.missing,
        s.unexpected,
        s.duplicates,
        s.dead_letters,
        s.bad_records,
        s.elapsed_s
    );
    println!(
        "{}",
        if s.exact() { "demo: output equals the ground truth" } else { "demo: output DIFFERS from the ground truth" }
    );
}
