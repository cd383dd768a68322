//! The embedded broker through real clients (librdkafka over TCP): it keeps
//! what it is given, past the 5 MiB a partition librdkafka's mock cluster
//! kept, and runs a consumer group's rebalances.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use vigil::embedded::{produce_all, read_all, read_each, EmbeddedBroker, Record};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_keeps_every_record_in_order_past_the_mock_clusters_cap() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("big", 1).unwrap();
    let records: Vec<Record> = (0..30_000)
        .map(|i| Record {
            topic: "big".into(),
            key: format!("k{}", i % 7),
            payload: format!("{i:0>512}").into_bytes(),
            headers: Vec::new(),
        })
        .collect();
    produce_all(&broker.bootstrap_servers(), &records).await.unwrap();
    assert!(broker.size() > 10 << 20, "{} bytes held", broker.size());
    let bootstrap = broker.bootstrap_servers();
    let read = tokio::task::spawn_blocking(move || read_all(&bootstrap, "big", Duration::from_secs(60)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.len(), records.len());
    for (i, r) in read.iter().enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(r.payload.as_deref(), Some(records[i].payload.as_slice()), "offset {i}");
    }
}

/// A read back that stops early keeps what it read, and a read on from the
/// next offsets of those records goes on from there: every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_stops_goes_on_where_it_stopped() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("outputs", 3).unwrap();
    let records: Vec<Record> = (0..3_000)
        .map(|i| Record { topic: "outputs".into(), key: format!("k{i}"), payload: vec![1; 64], headers: Vec::new() })
        .collect();
    produce_all(&broker.bootstrap_servers(), &records).await.unwrap();
    let bootstrap = broker.bootstrap_servers();
    let (reads, seen) = tokio::task::spawn_blocking(move || {
        let (mut next, mut seen, mut reads) = (BTreeMap::<i32, i64>::new(), Vec::new(), 0);
        loop {
            reads += 1;
            assert!(reads < 100, "no end after {reads} reads");
            let mut this = 0;
            let (props, from) = (BTreeMap::new(), next.clone());
            let end = read_each(&bootstrap, &props, "outputs", &from, Duration::from_secs(30), |m| {
                use rdkafka::Message;
                seen.push((m.partition(), m.offset()));
                next.insert(m.partition(), m.offset() + 1);
                this += 1;
                if this == 700 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
            if end {
                return (reads, seen);
            }
        }
    })
    .await
    .unwrap();
    assert!(reads >= 5, "{reads} reads of 3,000 records at 700 a read");
    let unique: BTreeSet<(i32, i64)> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "a record read twice");
    assert_eq!(seen.len(), records.len());
}

fn member(bootstrap: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "g")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["shared"]).unwrap();
    consumer
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment().unwrap().elements().iter().map(|e| e.partition()).collect()
}

/// Polls every member until `done` holds of their assignments.
fn poll_until(members: &[&BaseConsumer], done: impl Fn(&[BTreeSet<i32>]) -> bool) -> Vec<BTreeSet<i32>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for m in members {
            let _ = m.poll(Duration::from_millis(50));
        }
        let now: Vec<BTreeSet<i32>> = members.iter().map(|m| assigned(m)).collect();
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "the group did not settle: {now:?}");
    }
}

#[test]
fn a_group_splits_its_partitions_and_takes_them_back_when_a_member_leaves() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("shared", 4).unwrap();
    let bootstrap = broker.bootstrap_servers();
    let (a, b) = (member(&bootstrap), member(&bootstrap));
    let split = poll_until(&[&a, &b], |s| s.iter().all(|p| p.len() == 2));
    assert!(split[0].is_disjoint(&split[1]), "{split:?}");
    drop(b); // closes: LeaveGroup, so no session timeout to wait for
    let started = Instant::now();
    poll_until(&[&a], |s| s[0].len() == 4);
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}: the leave was not seen", started.elapsed());
}
