//! Scale-out: instances in one consumer group split the partitions. Two
//! instances start, a third joins mid-run, one of the first leaves (SIGTERM,
//! as Kubernetes stops a pod), the other is killed (SIGKILL: the group
//! coordinator of Apache Kafka expires it after its session timeout); every
//! rebalance moves partitions between them and the output must still equal
//! the ground truth, with no id twice.
//!
//! Each membership change is measured: the events the group read again
//! because of it (every instance re-reads what its partitions still retain)
//! and the seconds until it had read them (deciding again from there).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    compare, free_port, generate, kafka_with_topics, scrape, start_vigil, wait_for_output, write_config, Running,
};

/// The instance's share of the group's partitions (it also reads the 3
/// access partitions in full).
fn group_partitions(port: u16) -> Option<i64> {
    let text = scrape(port);
    let n = vigil::metrics::sample_sum(&text, "vigil_assigned_partitions") as i64;
    (text.contains("vigil_assigned_partitions")).then_some((n - 3).max(0))
}

/// Waits until the instances on `ports` share all 9 group partitions.
fn wait_for_split(ports: &[u16], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let shares: Vec<Option<i64>> = ports.iter().map(|p| group_partitions(*p)).collect();
        let all = shares.iter().all(|s| s.is_some_and(|n| n > 0));
        if all && shares.iter().flatten().sum::<i64>() == 9 {
            eprintln!("rebalance: partitions split {shares:?}");
            return;
        }
        assert!(Instant::now() < deadline, "the group did not settle: {shares:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Samples every instance's /metrics every 100 ms: per port the last
/// `vigil_events_consumed_total` and `vigil_decisions_total` seen (a dead
/// instance keeps its last figures), summed.
struct Sampler {
    samples: std::sync::Arc<std::sync::Mutex<Vec<(Instant, f64, f64)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Sampler {
    fn start(ports: [u16; 3]) -> Sampler {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (out, done) = (samples.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = [(0.0, 0.0); 3];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, port) in ports.iter().enumerate() {
                    let text = scrape(*port);
                    if !text.is_empty() {
                        let sum = |name| vigil::metrics::sample_sum(&text, name);
                        last[i] = (sum("vigil_events_consumed_total"), sum("vigil_decisions_total"));
                    }
                }
                let (consumed, decided) = last.iter().fold((0.0, 0.0), |(c, d), (a, b)| (c + a, d + b));
                out.lock().unwrap().push((Instant::now(), consumed, decided));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Sampler { samples, stop }
    }

    /// Waits until the group has read nothing new for 2 s.
    fn wait_quiet(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let samples = self.samples.lock().unwrap();
            let Some(&(now, consumed, _)) = samples.last() else { continue };
            let quiet = samples.iter().rev().take_while(|(_, c, _)| *c == consumed).last();
            if quiet.is_some_and(|(t, _, _)| now.duration_since(*t) >= Duration::from_secs(2)) {
                return;
            }
            assert!(Instant::now() < deadline, "the group kept reading for 120 s");
        }
    }

    /// Since `change`: events read (up to now), seconds until the last of
    /// them was read (the group caught up again), and the decisions made.
    fn cost(&self, change: Instant) -> (f64, f64, f64) {
        let samples = self.samples.lock().unwrap();
        let before = samples.iter().rev().find(|(t, _, _)| *t <= change).copied().unwrap_or((change, 0.0, 0.0));
        let last = samples.last().copied().unwrap_or(before);
        let caught_up = samples.iter().find(|(t, c, _)| *t > change && *c == last.1).map_or(change, |s| s.0);
        (last.1 - before.1, caught_up.saturating_duration_since(change).as_secs_f64(), last.2 - before.2)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn stop_gracefully(instance: Running) {
    let pid = instance.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let mut instance = instance;
    let deadline = Instant::now() + Duration::from_secs(30);
    while instance.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "instance did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn instances_joining_and_leaving_mid_run_keep_the_output_exact() {
    let dir = tempfile::tempdir().unwrap();
    let broker = kafka_with_topics(3);
    let expected = generate(&broker.bootstrap(), 30_000, 31, dir.path());
    let ports = [free_port(), free_port(), free_port()];
    let configs: Vec<_> = ports.iter().map(|p| write_config(dir.path(), &broker.bootstrap(), "scale", *p)).collect();
    let logs: Vec<_> = (0..3).map(|i| dir.path().join(format!("vigil-{i}.log"))).collect();

    let sampler = Sampler::start(ports);
    let a = start_vigil(&configs[0], &logs[0]);
    let b = start_vigil(&configs[1], &logs[1]);
    wait_for_split(&ports[..2], Duration::from_secs(60));
    sampler.wait_quiet();
    let (first_read, _, _) = sampler.cost(Instant::now() - Duration::from_secs(3600));
    let mut costs = Vec::new();
    let mut measure = |what: &str, change: Instant, live: &[u16]| {
        wait_for_split(live, Duration::from_secs(60));
        sampler.wait_quiet();
        let (read, caught_up, decided) = sampler.cost(change);
        costs.push(format!("{what}: replayed={read:.0} caught_up={caught_up:.1}s redecided={decided:.0}"));
    };
    let joined = Instant::now();
    let c = start_vigil(&configs[2], &logs[2]);
    measure("join", joined, &ports);
    let left = Instant::now();
    stop_gracefully(a);
    measure("leave", left, &ports[1..]);
    let killed = Instant::now();
    drop(b); // SIGKILL
    measure("kill", killed, &ports[2..]);

    let found = wait_for_output(&broker.bootstrap(), &expected, Duration::from_secs(5), Duration::from_secs(240));
    let outcome = compare(&expected, &found);
    println!("rebalance: first read of the stream by two instances: {first_read:.0} events; {}", costs.join("; "));
    support::summary(format_args!(
        "rebalance: broker={} protocol=eager-range joined=1 left=1 killed=1 missing={} unexpected={} duplicates={}",
        broker.label(),
        outcome.missing,
        outcome.unexpected,
        outcome.duplicates
    ));
    if outcome != support::Outcome::default() {
        let logs: Vec<String> = logs.iter().map(|l| std::fs::read_to_string(l).unwrap_or_default()).collect();
        panic!(
            "{outcome:?}; unexpected: {:?}\nlogs:\n{}",
            support::describe_unexpected(&expected, &found),
            logs.join("\n----\n")
        );
    }
    drop(c);
}
