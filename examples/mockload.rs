use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(100_000);
    let mock = MockCluster::new(1).unwrap();
    let topics = ["a", "b", "c", "d"];
    for t in topics { mock.create_topic(t, 3, 1).unwrap(); }
    let bs = mock.bootstrap_servers();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &bs)
        .set("linger.ms", "20").set("batch.num.messages", "10000").set("batch.size", "1000000").create().unwrap();
    let payload = vec![b'x'; 300];
    let t0 = Instant::now();
    let mut futs = Vec::new();
    for i in 0..n {
        let key = format!("k{}", i % 17);
        let f = producer.send_result(FutureRecord::to(topics[i % 4]).key(&key).payload(&payload)).unwrap();
        futs.push(f);
    }
    for f in futs { f.await.unwrap().unwrap(); }
    println!("produced {n} in {:?}", t0.elapsed());
    let consumer: StreamConsumer = ClientConfig::new().set("bootstrap.servers", &bs)
        .set("group.id", "g").set("auto.offset.reset", "earliest").set("enable.auto.commit", "false")
        .create().unwrap();
    consumer.subscribe(&topics).unwrap();
    let t1 = Instant::now();
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(20), consumer.recv()).await {
            Ok(Ok(m)) => { let _ = m.payload().map(|p| p.len()); got += 1; if got % 20000 == 0 { println!("{got} at {:?}", t1.elapsed()); } }
            Ok(Err(e)) => println!("err {e}"),
            Err(_) => { println!("timeout at {got}"); break; }
        }
    }
    println!("consumed {got} in {:?}", t1.elapsed());
}
