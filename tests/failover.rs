//! Three Apache Kafka nodes, every topic replicated three times with
//! `min.insync.replicas=2`. Mid-run the node leading most input and output
//! partitions is killed (SIGKILL), started again on its log directory a
//! minute later, and then the node leading most partitions by then is
//! killed too. The stream arrives in three parts — before the first kill,
//! while that node is down, after the second kill — so Vigil reads, decides
//! and publishes (`acks=all`) through both. Its readiness may dip while
//! leaders move, but its output must equal the ground truth, with no id
//! twice.
//!
//! VIGIL_FAILOVER_EVENTS (default 100,000) and VIGIL_FAILOVER_DOWN_SECS
//! (default 60) shape the run.

mod support;

use std::time::{Duration, Instant};

use support::{compare, free_port, scrape, start_vigil, wait_for_output, write_config, Cluster, Layout};
use vigil::embedded::{produce_all, Record};

const TOPICS: [&str; 6] = ["change", "ci", "access", "deploy", "vigil-violations", "vigil-evidence"];

/// The node leading most partitions of Vigil's topics, leaving out `except`.
fn busiest_leader(cluster: &Cluster, except: Option<u32>) -> (u32, usize) {
    let leaders = cluster.leaders(&TOPICS).unwrap_or_else(|e| panic!("reading partition leaders: {e:#}"));
    eprintln!("failover: partitions led per node {leaders:?}");
    leaders
        .into_iter()
        .filter(|(id, _)| Some(*id) != except)
        .max_by_key(|(_, n)| *n)
        .expect("no partition has a leader")
}

/// The generated stream as records in the order a producer sends them, and
/// the ids of the violations it holds.
fn stream(events: usize, seed: u64) -> (Vec<Record>, Vec<String>) {
    let catalog = vigil::schema::Catalog::builtin().unwrap();
    let (events, truth) =
        vigil::generate::generate(&vigil::generate::GenConfig::new(events, seed, vigil::pipeline::wall_ms()));
    let topics = vigil::schema::Topic::ALL.map(|t| t.name().to_string());
    let records = vigil::generate::records(&catalog, &events, vigil::generate::Encoding::Avro, &topics).unwrap();
    (records, truth.violations.into_iter().map(|v| v.id).collect())
}

fn produce(bootstrap: &str, records: &[Record]) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(produce_all(bootstrap, records)).unwrap_or_else(|e| panic!("producing: {e:#}"));
}

fn consumed(port: u16) -> f64 {
    vigil::metrics::sample_sum(&scrape(port), "vigil_events_consumed_total")
}

#[test]
fn killing_the_partition_leaders_mid_run_leaves_the_output_exact() {
    let events = support::env_or("VIGIL_FAILOVER_EVENTS", 100_000) as usize;
    let down = Duration::from_secs(support::env_or("VIGIL_FAILOVER_DOWN_SECS", 60));
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = support::kafka(Layout::three(), 3);
    let bootstrap = cluster.bootstrap();
    let (records, expected) = stream(events, 41);
    let thirds: Vec<&[Record]> = records.chunks(records.len().div_ceil(3)).collect();
    produce(&bootstrap, thirds[0]);
    let port = free_port();
    let config = write_config(dir.path(), &bootstrap, "failover", port);
    // The parts arrive up to a minute apart: a partition silent for that
    // long must not count as idle, or the watermark would follow the wall
    // clock past the parts still to come (see ARCHITECTURE.md, known limits).
    let text = std::fs::read_to_string(&config).unwrap().replace("idle_timeout = \"1s\"", "idle_timeout = \"90s\"");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("vigil.log");
    let _vigil = start_vigil(&config, &log);

    // Mid-run: the first part being read.
    let deadline = Instant::now() + Duration::from_secs(120);
    while consumed(port) < 1.0 {
        assert!(Instant::now() < deadline, "nothing read within 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let (first, led) = busiest_leader(&cluster, None);
    let at_first = consumed(port);
    cluster.kill(first);
    eprintln!("failover: killed node {first} (leading {led} partitions) at {at_first} events consumed");
    let killed_at = Instant::now();
    produce(&bootstrap, thirds[1]);
    eprintln!("failover: second part produced {:.1}s after the kill", killed_at.elapsed().as_secs_f64());
    let mut not_ready = Duration::ZERO;
    let sample = Duration::from_millis(250);
    while killed_at.elapsed() < down {
        if ureq::get(&format!("http://127.0.0.1:{port}/readyz")).call().is_err() {
            not_ready += sample;
        }
        std::thread::sleep(sample);
    }
    cluster.restart(first).unwrap_or_else(|e| panic!("restarting node {first}: {e:#}"));
    eprintln!("failover: node {first} back after {:.0}s", killed_at.elapsed().as_secs_f64());
    // Let the restarted node catch up into the in-sync replicas before its
    // peer goes: with two of three gone no write could be acknowledged.
    std::thread::sleep(Duration::from_secs(10));
    let (second, led) = busiest_leader(&cluster, Some(first));
    let at_second = consumed(port);
    cluster.kill(second);
    eprintln!("failover: killed node {second} (leading {led} partitions) at {at_second} events consumed");
    produce(&bootstrap, thirds[2]);

    let found = wait_for_output(&bootstrap, &expected, Duration::from_secs(5), Duration::from_secs(400));
    let outcome = compare(&expected, &found);
    support::summary(format_args!(
        "failover: broker={} nodes=3 killed={first},{second} not_ready={:.1}s events={events} missing={} unexpected={} \
         duplicates={} ({:.0}s)",
        cluster.label(),
        not_ready.as_secs_f64(),
        outcome.missing,
        outcome.unexpected,
        outcome.duplicates,
        started.elapsed().as_secs_f64()
    ));
    assert_eq!(
        outcome,
        support::Outcome::default(),
        "unexpected: {:?}\nlog:\n{}",
        support::describe_unexpected(&expected, &found),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}
