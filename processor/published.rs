//! The violation ids already on the violations topic.
//!
//! After a restart the pipeline replays from its committed offsets and
//! decides again the triggers it had decided (and published) before the
//! crash; after a rebalance the new owner of a partition does the same. The
//! ids are deterministic, so the violations topic itself says what has been
//! published: before deciding anything at start-up, and whenever partitions
//! are newly assigned, the pipeline reads the topic on from where it last
//! stopped, and it publishes no id that is already there. A violation
//! published once stays published once, with the content it first had.
//!
//! A rebalance revokes a partition from its old owner (which drops that
//! partition's state and pending triggers, having acknowledged everything it
//! published) before the new owner is assigned it, so the new owner's read
//! sees every id the old owner published for it.
//!
//! Memory: a 128-bit number per violation ever published (16 bytes, about 40
//! with the hash set's overhead).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::config::Config;
use crate::embedded::read_from;

pub struct Published {
    bootstrap: String,
    properties: BTreeMap<String, String>,
    topic: String,
    ids: HashSet<u128>,
    /// Next offset to read per partition.
    next: BTreeMap<i32, i64>,
}

/// Violation ids are 32 hex digits.
fn key(id: &str) -> Option<u128> {
    u128::from_str_radix(id, 16).ok()
}

impl Published {
    pub fn new(config: &Config) -> Published {
        Published {
            bootstrap: config.bootstrap_servers.clone(),
            properties: config.kafka_properties.clone(),
            topic: config.violations_topic.clone(),
            ids: HashSet::new(),
            next: BTreeMap::new(),
        }
    }

    /// Reads the violations topic on to its current end; returns how many
    /// records were read.
    pub async fn catch_up(&mut self, timeout: Duration) -> anyhow::Result<usize> {
        let (bootstrap, properties, topic, from) =
            (self.bootstrap.clone(), self.properties.clone(), self.topic.clone(), self.next.clone());
        let records =
            tokio::task::spawn_blocking(move || read_from(&bootstrap, &properties, &topic, &from, timeout)).await??;
        for r in &records {
            if let Some(id) = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()).and_then(key) {
                self.ids.insert(id);
            }
            let next = self.next.entry(r.partition).or_insert(0);
            *next = (*next).max(r.offset + 1);
        }
        Ok(records.len())
    }

    pub fn contains(&self, id: &str) -> bool {
        key(id).is_some_and(|k| self.ids.contains(&k))
    }

    pub fn insert(&mut self, id: &str) {
        if let Some(k) = key(id) {
            self.ids.insert(k);
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}
