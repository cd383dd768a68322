//! What the process-level tests share: free ports, child processes that die
//! with the test, Apache Kafka in its own processes, configs, and reading
//! the violations topic back.
#![allow(dead_code)] // each test target uses a different part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the child (SIGKILL) when dropped, pass or fail.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vigil run --config <config>`, its log in `log`.
pub fn start_vigil(config: &Path, log: &Path) -> Running {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Running(
        Command::new(VIGIL)
            .args(["run", "--config"])
            .arg(config)
            .env("VIGIL_LOG", "warn,vigil=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// A running Apache Kafka (one node, or three for the failover drills).
pub use vigil::apache_kafka::{Cluster, Layout};

/// Apache Kafka with one combined broker+controller node and Vigil's topics
/// (`partitions` each, the dead-letter topic one).
pub fn kafka_with_topics(partitions: i32) -> Cluster {
    kafka(Layout::single(), partitions)
}

/// Apache Kafka laid out as `layout`, with Vigil's topics.
pub fn kafka(layout: Layout, partitions: i32) -> Cluster {
    let cluster = Cluster::start(layout).unwrap_or_else(|e| panic!("starting Apache Kafka: {e:#}"));
    cluster.create_vigil_topics(partitions).unwrap_or_else(|e| panic!("creating Vigil's topics: {e:#}"));
    cluster
}

/// The number in environment variable `name`, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A config for `vigil run` against `bootstrap`, with the generated
/// organisation's identity map and short timeouts for tests.
pub fn write_config(dir: &Path, bootstrap: &str, group: &str, metrics_port: u16) -> PathBuf {
    let path = dir.join(format!("{group}-{metrics_port}.toml"));
    let text = format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"{group}\"\n\n\
         [kafka.consumer_properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n\n\
         [time]\ntick = \"200ms\"\nidle_timeout = \"1s\"\n\n\
         [metrics]\naddr = \"127.0.0.1:{metrics_port}\"\n\n{}",
        vigil::generate::identities_toml()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `vigil generate` into the broker, batched as any producer batches;
/// returns the expected violation ids.
pub fn generate(bootstrap: &str, events: usize, seed: u64, dir: &Path) -> Vec<String> {
    generate_over(bootstrap, events, seed, 7, dir)
}

/// [`generate`] over `days` of event time.
pub fn generate_over(bootstrap: &str, events: usize, seed: u64, days: u32, dir: &Path) -> Vec<String> {
    let truth_path = dir.join("truth.json");
    let status = Command::new(VIGIL)
        .args(["generate", "--events", &events.to_string(), "--seed", &seed.to_string(), "--brokers", bootstrap])
        .args(["--days", &days.to_string()])
        .arg("--truth")
        .arg(&truth_path)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "vigil generate");
    let truth: vigil::generate::Truth = serde_json::from_str(&std::fs::read_to_string(&truth_path).unwrap()).unwrap();
    truth.violations.into_iter().map(|v| v.id).collect()
}

/// What is on the violations topic: payloads per id, in order.
pub fn violations(bootstrap: &str) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for r in vigil::embedded::read_all(bootstrap, "vigil-violations", Duration::from_secs(60)).unwrap() {
        let id = String::from_utf8(r.key.unwrap_or_default()).unwrap();
        out.entry(id).or_default().push(r.payload.unwrap_or_default());
    }
    out
}

/// GETs /metrics, or an empty text while the endpoint is down.
pub fn scrape(port: u16) -> String {
    ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default()
}

/// Whether a scrape says `vigil_ready 1` (the sample, not its HELP text,
/// which begins the same way).
pub fn is_ready(metrics: &str) -> bool {
    metrics.lines().any(|l| l.trim() == "vigil_ready 1")
}

/// How the output compares with the truth.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub missing: usize,
    pub unexpected: usize,
    /// Records beyond the first per id.
    pub duplicates: usize,
    /// Ids published more than once with different content.
    pub conflicting: usize,
}

pub fn compare(expected: &[String], found: &BTreeMap<String, Vec<Vec<u8>>>) -> Outcome {
    let expected: std::collections::BTreeSet<&String> = expected.iter().collect();
    Outcome {
        missing: expected.iter().filter(|id| !found.contains_key(**id)).count(),
        unexpected: found.keys().filter(|id| !expected.contains(id)).count(),
        duplicates: found.values().map(|v| v.len() - 1).sum(),
        conflicting: found.values().filter(|v| v.iter().any(|p| p != &v[0])).count(),
    }
}

/// "control subject" of each unexpected violation, for failure messages.
pub fn describe_unexpected(expected: &[String], found: &BTreeMap<String, Vec<Vec<u8>>>) -> Vec<String> {
    let catalog = vigil::schema::Catalog::builtin().unwrap();
    found
        .iter()
        .filter(|(id, _)| !expected.contains(id))
        .map(|(_, payloads)| match vigil::violation::Violation::from_confluent_avro(&catalog.violation, &payloads[0]) {
            Ok(v) => format!("{} {} {}", v.control_id, v.subject, v.message),
            Err(e) => format!("undecodable: {e}"),
        })
        .collect()
}

/// Waits until every expected id is on the violations topic and nothing new
/// has arrived for `quiet`; returns what is there.
pub fn wait_for_output(
    bootstrap: &str,
    expected: &[String],
    quiet: Duration,
    timeout: Duration,
) -> BTreeMap<String, Vec<Vec<u8>>> {
    let deadline = Instant::now() + timeout;
    let mut last_count = usize::MAX;
    let mut stable_since = Instant::now();
    loop {
        let found = violations(bootstrap);
        let count: usize = found.values().map(Vec::len).sum();
        if count != last_count {
            last_count = count;
            stable_since = Instant::now();
        }
        let complete = expected.iter().all(|id| found.contains_key(id));
        if (complete && stable_since.elapsed() >= quiet) || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A real Alertmanager (Debian's prometheus-alertmanager) on `port` with
/// the config at `config`, its data in `dir`.
pub fn alertmanager(port: u16, dir: &Path, config: &Path) -> Running {
    let child = Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager: install Debian's prometheus-alertmanager (tests/run.sh does)");
    Running(child)
}

/// An Alertmanager config that routes everything to a receiver that sends
/// nothing, written into `dir`.
pub fn quiet_alertmanager_config(dir: &Path) -> PathBuf {
    let path = dir.join("alertmanager.yml");
    std::fs::write(&path, "route:\n  receiver: quiet\nreceivers:\n  - name: quiet\n").unwrap();
    path
}

/// The alerts Alertmanager holds, keyed by violation_id.
pub fn alerts_in(port: u16) -> BTreeMap<String, serde_json::Value> {
    let Ok(mut response) = ureq::get(&format!("http://127.0.0.1:{port}/api/v2/alerts")).call() else {
        return BTreeMap::new();
    };
    let alerts: Vec<serde_json::Value> = serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    alerts.into_iter().map(|a| (a["labels"]["violation_id"].as_str().unwrap_or_default().to_string(), a)).collect()
}

/// Prints a drill's summary line (`NAME: broker=… missing=M …`) straight to
/// standard error: the test harness captures only `print!`-family output,
/// so the line shows in the README's test command, passing or failing.
pub fn summary(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
