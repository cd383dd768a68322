//! Consumer lag from librdkafka's statistics: per assigned partition, the
//! records between the broker's high watermark and the next record handed
//! to Vigil. (librdkafka's own `consumer_lag` counts from the committed
//! offset, which Vigil holds back while events are retained — it would show
//! the retention, not the backlog.)

use std::collections::BTreeMap;
use std::sync::Mutex;

use rdkafka::statistics::Statistics;

/// The latest lag per (Kafka topic, partition), shared by the consumers'
/// contexts (written from librdkafka's poll) and the pipeline (read each tick).
#[derive(Default)]
pub struct Lag {
    by_partition: Mutex<BTreeMap<(String, i32), i64>>,
    /// librdkafka's view of each partition's fetch, for diagnosing a stall.
    fetch: Mutex<BTreeMap<(String, i32), String>>,
}

impl Lag {
    /// Replaces the lag of every topic `stats` reports on (each consumer
    /// reports only its own topics).
    pub fn record(&self, stats: &Statistics) {
        let mut map = self.by_partition.lock().unwrap_or_else(|p| p.into_inner());
        let mut fetch = self.fetch.lock().unwrap_or_else(|p| p.into_inner());
        for (name, topic) in &stats.topics {
            map.retain(|(t, _), _| t != name);
            for (p, part) in &topic.partitions {
                fetch.insert(
                    (name.clone(), *p),
                    format!(
                        "fetch_state={} desired={} next={} app={} committed={} lo={} hi={} fetchq={}",
                        part.fetch_state,
                        part.desired,
                        part.next_offset,
                        part.app_offset,
                        part.committed_offset,
                        part.lo_offset,
                        part.hi_offset,
                        part.fetchq_cnt
                    ),
                );
                // -1 is librdkafka's internal unassigned partition; a
                // partition no longer desired was revoked.
                if *p < 0 || !part.desired || part.hi_offset < 0 {
                    continue;
                }
                let position = if part.app_offset >= 0 { part.app_offset } else { part.committed_offset };
                if position >= 0 {
                    map.insert((name.clone(), *p), (part.hi_offset - position).max(0));
                }
            }
        }
    }

    /// librdkafka's last reported fetch state of a partition.
    pub fn fetch_state(&self, topic: &str, partition: i32) -> Option<String> {
        self.fetch.lock().unwrap_or_else(|p| p.into_inner()).get(&(topic.to_string(), partition)).cloned()
    }

    /// The latest lag of every partition.
    pub fn snapshot(&self) -> Vec<((String, i32), i64)> {
        let map = self.by_partition.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}
