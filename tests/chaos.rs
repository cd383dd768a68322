//! kill -9 at random moments, restart each time, and the output must still
//! equal the ground truth: nothing missing, nothing unexpected, no id
//! published twice. The broker is Apache Kafka, in its own process. Some
//! instances die while the group is still forming around them (a rebalance
//! in flight, the dead member still in the group until its session
//! expires), the others at random moments after they hold every partition.
//!
//! VIGIL_CHAOS_EVENTS (default 20,000), VIGIL_CHAOS_KILLS (default 3) and
//! VIGIL_CHAOS_SEED (default 1) shape the run:
//!
//! ```sh
//! VIGIL_CHAOS_EVENTS=200000 VIGIL_CHAOS_KILLS=5 cargo test --release --test chaos -- --nocapture
//! ```

mod support;

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::{compare, free_port, generate, kafka_with_topics, start_vigil, wait_for_output, write_config};

/// Waits until the processor holds every partition: 3 of each group topic
/// and the 3 access partitions it reads in full.
fn wait_until_ready(port: u16, timeout: Duration) -> Duration {
    let started = Instant::now();
    while !support::scrape(port).contains("vigil_assigned_partitions 12") {
        assert!(started.elapsed() < timeout, "the processor did not join the group within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
fn kill_dash_nine_at_random_moments_loses_nothing_and_doubles_nothing() {
    let events = support::env_or("VIGIL_CHAOS_EVENTS", 20_000) as usize;
    let kills = support::env_or("VIGIL_CHAOS_KILLS", 3);
    let mut rng = ChaCha8Rng::seed_from_u64(support::env_or("VIGIL_CHAOS_SEED", 1));
    let dir = tempfile::tempdir().unwrap();
    let broker = kafka_with_topics(3);
    let expected = generate(&broker.bootstrap(), events, 17, dir.path());
    let port = free_port();
    let config = write_config(dir.path(), &broker.bootstrap(), "chaos", port);
    // A real Alertmanager: every violation must end up an alert in it, also
    // those a killed instance had queued and not yet posted.
    let am_port = free_port();
    let am_dir = dir.path().join("alertmanager");
    let _alertmanager = support::alertmanager(am_port, &am_dir, &support::quiet_alertmanager_config(dir.path()));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[alerts]\nalertmanager_url = \"http://127.0.0.1:{am_port}\"\n"));
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("vigil.log");

    // Each even life lasts a random time once the instance holds all
    // partitions: some die mid-replay, some mid-tick or mid-publish, some
    // after catching up. Each odd one dies at a random moment of its join,
    // while the coordinator is still rebalancing the group around it.
    let started = Instant::now();
    let life_ms = 500 + (events as u64 / 10).min(30_000);
    let mut mid_rebalance = 0;
    for k in 0..kills {
        let running = start_vigil(&config, &log);
        if k % 2 == 1 {
            let up = Instant::now();
            while ureq::get(&format!("http://127.0.0.1:{port}/healthz")).call().is_err() {
                assert!(up.elapsed() < Duration::from_secs(30), "the processor did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(0..2_000)));
            let joined = support::scrape(port).contains("vigil_assigned_partitions 12");
            mid_rebalance += usize::from(!joined);
            drop(running); // SIGKILL
            let when = if joined { "after joining" } else { "mid-rebalance" };
            eprintln!("chaos: kill {} {when} ({:.1}s after start)", k + 1, up.elapsed().as_secs_f64());
            continue;
        }
        let joined = wait_until_ready(port, Duration::from_secs(90));
        let lived = Duration::from_millis(rng.random_range(0..life_ms));
        std::thread::sleep(lived);
        drop(running); // SIGKILL
        eprintln!("chaos: kill {} after joining ({:.1}s) + {:.1}s", k + 1, joined.as_secs_f64(), lived.as_secs_f64());
    }
    let _last = start_vigil(&config, &log);
    let timeout = Duration::from_secs(120 + events as u64 / 500);
    let found = wait_for_output(&broker.bootstrap(), &expected, Duration::from_secs(5), timeout);
    let outcome = compare(&expected, &found);
    // The last instance hands every violation of the last `resolve_after`
    // that Alertmanager lacks back to its sender: wait for them to arrive.
    let deadline = Instant::now() + Duration::from_secs(60);
    let unalerted = loop {
        let alerts = support::alerts_in(am_port);
        let unalerted = expected.iter().filter(|id| !alerts.contains_key(*id)).count();
        if unalerted == 0 || Instant::now() > deadline {
            break unalerted;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    support::summary(format_args!(
        "chaos: broker={} kills={kills} events={events} missing={} unexpected={} duplicates={} \
         unalerted={unalerted} mid_rebalance={mid_rebalance} ({:.0}s)",
        broker.label(),
        outcome.missing,
        outcome.unexpected,
        outcome.duplicates,
        started.elapsed().as_secs_f64()
    ));
    if outcome != support::Outcome::default() || unalerted > 0 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let kept = std::env::temp_dir().join("vigil-chaos-failure.log");
        let _ = std::fs::write(&kept, &text);
        eprintln!("chaos: the processors' log is kept in {}", kept.display());
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let unexpected = support::describe_unexpected(&expected, &found);
        panic!(
            "{outcome:?}; {unalerted} violations have no alert in Alertmanager; expected {} violations; \
             unexpected:\n{}\nlast log lines:\n{}",
            expected.len(),
            unexpected.join("\n"),
            tail.join("\n")
        );
    }
}

/// Alerts queued in memory die with the process: the restarted instance
/// finds the violations already published (so it publishes none again) and
/// must hand them back to its alert sender, which posts those Alertmanager
/// lacks.
#[test]
fn alerts_queued_when_killed_are_sent_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = kafka_with_topics(3);
    let expected = generate(&broker.bootstrap(), 5_000, 23, dir.path());
    let port = free_port();
    let am_port = free_port();
    let config = write_config(dir.path(), &broker.bootstrap(), "alerts", port);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[alerts]\nalertmanager_url = \"http://127.0.0.1:{am_port}\"\n"));
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("vigil.log");

    // Alertmanager is not up: every alert stays queued until the kill.
    let first = start_vigil(&config, &log);
    let found = wait_for_output(&broker.bootstrap(), &expected, Duration::from_secs(2), Duration::from_secs(120));
    assert_eq!(compare(&expected, &found), support::Outcome::default());
    let metrics = support::scrape(port);
    assert!(vigil::metrics::sample_sum(&metrics, "vigil_alerts_sent_total") == 0.0, "an alert was sent");
    drop(first); // SIGKILL, alerts still queued

    let _alertmanager =
        support::alertmanager(am_port, &dir.path().join("am"), &support::quiet_alertmanager_config(dir.path()));
    let _second = start_vigil(&config, &log);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let alerts = support::alerts_in(am_port);
        let missing = expected.iter().filter(|id| !alerts.contains_key(*id)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} violations have no alert after the restart; log:\n{}",
            expected.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let resent = vigil::metrics::sample_sum(&support::scrape(port), "vigil_alerts_resent_total");
    assert_eq!(resent as usize, expected.len(), "each violation's alert sent again once");
}
