//! The broker goes away for 30 seconds mid-run and comes back: the
//! processor reports not ready meanwhile, reconnects, and its output still
//! equals the ground truth. tansu runs in its own process behind a TCP proxy
//! that refuses and cuts every connection during the outage (tansu's memory
//! storage would not survive a restart of the broker process itself).
//! VIGIL_OUTAGE_SECS changes the length (default 30).

mod support;

use std::time::{Duration, Instant};

use support::{compare, free_port, generate, scrape, start_vigil, wait_for_output, write_config, Proxy, Tansu};

#[test]
fn a_broker_outage_mid_run_leaves_the_output_exact() {
    let outage =
        Duration::from_secs(std::env::var("VIGIL_OUTAGE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30));
    let dir = tempfile::tempdir().unwrap();
    let proxy_port = free_port();
    let broker = Tansu::start_advertising(free_port(), proxy_port);
    let proxy = Proxy::start(proxy_port, broker.port);
    broker.create_vigil_topics(3);
    let expected = generate(&broker.bootstrap(), 20_000, 29, dir.path());
    let port = free_port();
    let config = write_config(dir.path(), &broker.bootstrap(), "outage", port);
    let log = dir.path().join("vigil.log");
    let _vigil = start_vigil(&config, &log);

    let deadline = Instant::now() + Duration::from_secs(60);
    while !scrape(port).contains("vigil_ready 1") {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500)); // mid-run
    let before = support::violations(&broker.bootstrap()).len();
    proxy.cut();
    let cut_at = Instant::now();
    let mut saw_not_ready = false;
    while cut_at.elapsed() < outage {
        let ready = ureq::get(&format!("http://127.0.0.1:{port}/readyz")).call().is_ok();
        saw_not_ready |= !ready;
        std::thread::sleep(Duration::from_millis(250));
    }
    proxy.restore();
    eprintln!("outage: {:.0}s; {before} violations were out before it", outage.as_secs_f64());
    assert!(
        saw_not_ready,
        "/readyz kept answering ready during the outage; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let found = wait_for_output(&broker.bootstrap(), &expected, Duration::from_secs(5), Duration::from_secs(240));
    let outcome = compare(&expected, &found);
    println!(
        "outage: {}s missing={} unexpected={} duplicates={}",
        outage.as_secs(),
        outcome.missing,
        outcome.unexpected,
        outcome.duplicates
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !scrape(port).contains("vigil_ready 1") {
        assert!(Instant::now() < deadline, "not ready again after the outage");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(outcome, support::Outcome::default(), "log: {}", std::fs::read_to_string(&log).unwrap_or_default());
}
