//! The cost of a restart on Apache Kafka: seconds from kill -9 to the
//! first decision again and to decisions being current (`vigil_caught_up`),
//! with every event of a generated stream retained, under dynamic and under
//! static group membership (`group.instance.id`); the output stays exact.
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

/// Seconds from `since` until the instance on `port` has decided something,
/// and until it says its decisions are current.
fn decided_and_caught_up(port: u16, since: Instant, timeout: Duration) -> (f64, f64) {
    let mut decided = None;
    loop {
        let metrics = scrape(port);
        if decided.is_none() && total(&metrics, "vigil_decisions_total") > 0.0 {
            decided = Some(since.elapsed().as_secs_f64());
        }
        let caught_up = metrics.lines().any(|l| l.trim() == "vigil_caught_up 1");
        if let (Some(d), true) = (decided, caught_up) {
            return (d, since.elapsed().as_secs_f64());
        }
        assert!(since.elapsed() < timeout, "no decision within {timeout:?} of the restart:\n{metrics}");
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
    let expected = generate(&bootstrap, events, 5, dir.path());
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
        decided_and_caught_up(port, Instant::now(), timeout);
        if n == 0 {
            let found = wait_for_output(&bootstrap, &expected, Duration::from_secs(3), timeout);
            assert_eq!(compare(&expected, &found), Outcome::default(), "before any restart");
        }
        first.0.kill().unwrap();
        let killed = Instant::now();
        let _ = first.0.wait();
        let restarted = start(&config, instance, &log);
        let (decided, caught_up) = decided_and_caught_up(port, killed, timeout);
        figures.push(format!("{membership}: first_decision={decided:.1}s caught_up={caught_up:.1}s"));
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
    }
    assert_eq!(outcome, Outcome::default());
}
