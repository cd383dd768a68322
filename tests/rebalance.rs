//! Scale-out: instances in one consumer group split the partitions. Two
//! instances start, a third joins mid-run, one of the first leaves (SIGTERM,
//! as Kubernetes stops a pod), the other is killed (SIGKILL: the group
//! coordinator of Apache Kafka expires it after its session timeout); every
//! rebalance moves partitions between them and the output must still equal
//! the ground truth, with no id twice.

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

    let a = start_vigil(&configs[0], &logs[0]);
    let b = start_vigil(&configs[1], &logs[1]);
    wait_for_split(&ports[..2], Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let c = start_vigil(&configs[2], &logs[2]);
    wait_for_split(&ports, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    stop_gracefully(a);
    wait_for_split(&ports[1..], Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    drop(b); // SIGKILL
    wait_for_split(&ports[2..], Duration::from_secs(60));

    let found = wait_for_output(&broker.bootstrap(), &expected, Duration::from_secs(5), Duration::from_secs(240));
    let outcome = compare(&expected, &found);
    println!(
        "rebalance: broker={} joined=1 left=1 killed=1 missing={} unexpected={} duplicates={}",
        broker.label(),
        outcome.missing,
        outcome.unexpected,
        outcome.duplicates
    );
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
