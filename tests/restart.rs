//! The cost of a restart on Apache Kafka: seconds from kill -9 to decisions
//! being current again (`vigil_caught_up`; a first decision only if
//! something was left undecided),
//! with every event of a generated stream retained, under dynamic and under
//! static group membership (`group.instance.id`); the output stays exact.
//!
//! The stream spans 100 days, longer than state keeps changes (32 days)
//! and shorter than it keeps access grants (90, for AC-01): a restart reads
//! grants decided long ago beside changes that no longer hold their
//! requests, and must not decide them again (the committed decided-below
//! floors; before them this restart published violations that were never
//! there).
//!
//! `VIGIL_RESTART_EVENTS` sets the stream's size (100,000 in the suite;
//! BENCHMARKS.md has the 1,000,000 run, release build).

use std::path::Path;
use std::time::{Duration, Instant};

mod support;
use support::*;

/// Sum of a metric's samples in a scrape (every label set).
fn total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Seconds from `since` until the instance on `port` has read something
/// and says its decisions are current (`vigil_caught_up`), and until its
/// first decision if it made one by then: a restart after everything was
/// decided has nothing to decide again.
fn caught_up_and_decided(port: u16, since: Instant, timeout: Duration) -> (f64, Option<f64>) {
    let mut decided = None;
    loop {
        let metrics = scrape(port);
        if decided.is_none() && total(&metrics, "vigil_decisions_total") > 0.0 {
            decided = Some(since.elapsed().as_secs_f64());
        }
        let read = total(&metrics, "vigil_events_consumed_total") > 0.0;
        if read && metrics.lines().any(|l| l.trim() == "vigil_caught_up 1") {
            return (since.elapsed().as_secs_f64(), decided);
        }
        assert!(since.elapsed() < timeout, "not caught up within {timeout:?} of the restart:\n{metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `vigil run --config <config> [--instance-id <id>]`, its log in `log`.
fn start(config: &Path, instance: Option<&str>, log: &Path) -> Running {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut command = std::process::Command::new(VIGIL);
    command.args(["run", "--config"]).arg(config).env("VIGIL_LOG", "warn,vigil=info");
    if let Some(id) = instance {
        command.args(["--instance-id", id]);
    }
    Running(command.stdout(std::process::Stdio::null()).stderr(log).spawn().unwrap())
}

#[test]
fn a_restart_after_kill_dash_nine_rebuilds_state_and_stays_exact() {
    let events = env_or("VIGIL_RESTART_EVENTS", 100_000) as usize;
    let kafka = kafka_with_topics(3);
    let bootstrap = kafka.bootstrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("vigil.log");
    let expected = generate_over(&bootstrap, events, 5, 100, dir.path());
    let timeout = Duration::from_secs(600);
    let mut figures = Vec::new();
    // Each membership kind: a first run reads everything and decides; it is
    // killed, and the restart on the same config is timed.
    for (n, membership) in ["dynamic", "static"].into_iter().enumerate() {
        let port = free_port();
        let group = "vigil-restart";
        let config = write_config(dir.path(), &bootstrap, group, port);
        let instance = (membership == "static").then_some("vigil-0");
        let mut first = start(&config, instance, &log);
        caught_up_and_decided(port, Instant::now(), timeout);
        if n == 0 {
            let found = wait_for_output(&bootstrap, &expected, Duration::from_secs(3), timeout);
            assert_eq!(compare(&expected, &found), Outcome::default(), "before any restart");
        }
        first.0.kill().unwrap();
        let killed = Instant::now();
        let _ = first.0.wait();
        let restarted = start(&config, instance, &log);
        let (caught_up, decided) = caught_up_and_decided(port, killed, timeout);
        let decided = decided.map_or("none".to_string(), |d| format!("{d:.1}s"));
        figures.push(format!("{membership}: caught_up={caught_up:.1}s first_decision={decided}"));
        // The next membership kind starts in a group this instance left.
        drop(restarted);
        std::thread::sleep(Duration::from_secs(7));
    }
    let found = wait_for_output(&bootstrap, &expected, Duration::from_secs(3), timeout);
    let outcome = compare(&expected, &found);
    summary(format_args!(
        "restart: broker={} events={events} session_timeout=6s {} missing={} unexpected={} duplicates={}",
        kafka.label(),
        figures.join(" "),
        outcome.missing,
        outcome.unexpected,
        outcome.duplicates
    ));
    if outcome != Outcome::default() {
        eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
        for line in describe_unexpected(&expected, &found).iter().take(20) {
            eprintln!("unexpected: {line}");
        }
    }
    assert_eq!(outcome, Outcome::default());
}
