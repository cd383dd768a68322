//! Every broker goes away for 30 seconds mid-run and comes back: the Kafka
//! processes are killed (data kept on disk) and started again on the same
//! log directories. The processor reports not ready meanwhile, reconnects,
//! and its output still equals the ground truth. VIGIL_OUTAGE_SECS changes
//! the length (default 30).

mod support;

use std::time::{Duration, Instant};

use support::{compare, free_port, generate, kafka_with_topics, scrape, start_vigil, wait_for_output, write_config};

#[test]
fn a_broker_outage_mid_run_leaves_the_output_exact() {
    let outage =
        Duration::from_secs(std::env::var("VIGIL_OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30));
    let dir = tempfile::tempdir().unwrap();
    let mut broker = kafka_with_topics(3);
    let expected = generate(&broker.bootstrap(), 20_000, 29, dir.path());
    let port = free_port();
    let config = write_config(dir.path(), &broker.bootstrap(), "outage", port);
    let log = dir.path().join("vigil.log");
    let _vigil = start_vigil(&config, &log);

    let deadline = Instant::now() + Duration::from_secs(90);
    while !support::is_ready(&scrape(port)) {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Mid-run: some violations out, the stream not yet decided.
    while vigil::metrics::sample_sum(&scrape(port), "vigil_violations_total") < 1.0 {
        assert!(Instant::now() < deadline, "nothing decided before the outage");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = support::violations(&broker.bootstrap()).len();
    let nodes = broker.node_ids();
    for id in &nodes {
        broker.kill(*id);
    }
    let cut_at = Instant::now();
    let mut saw_not_ready = false;
    while cut_at.elapsed() < outage {
        let ready = ureq::get(&format!("http://127.0.0.1:{port}/readyz")).call().is_ok();
        saw_not_ready |= !ready;
        std::thread::sleep(Duration::from_millis(250));
    }
    for id in &nodes {
        broker.restart(*id).unwrap_or_else(|e| panic!("restarting kafka node {id}: {e:#}"));
    }
    eprintln!(
        "outage: {:.0}s; {before} violations were out before it; brokers back after {:.1}s",
        outage.as_secs_f64(),
        cut_at.elapsed().as_secs_f64()
    );
    assert!(
        saw_not_ready,
        "/readyz kept answering ready during the outage; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let found = wait_for_output(&broker.bootstrap(), &expected, Duration::from_secs(5), Duration::from_secs(240));
    let outcome = compare(&expected, &found);
    support::summary(format_args!(
        "outage: broker={} down={}s missing={} unexpected={} duplicates={}",
        broker.label(),
        outage.as_secs(),
        outcome.missing,
        outcome.unexpected,
        outcome.duplicates
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !support::is_ready(&scrape(port)) {
        assert!(Instant::now() < deadline, "not ready again after the outage");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(outcome, support::Outcome::default(), "log: {}", std::fs::read_to_string(&log).unwrap_or_default());
}
