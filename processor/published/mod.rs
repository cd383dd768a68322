//! The violation ids already on the violations topic (and the evidence
//! records already on the evidence topic, with each partition's chain tail).
//!
//! After a restart the pipeline replays from its committed offsets and
//! decides again the triggers at or above the committed floors it had
//! decided (and published) after its last commit; after a rebalance the new
//! owner of a partition does the same. The ids are deterministic, so the
//! violations topic itself says what has been published: before deciding
//! anything at start-up, and whenever partitions are newly assigned, the
//! pipeline reads the topic on from where it last stopped, and it publishes
//! no id that is already there. A violation
//! published once stays published once, with the content it first had.
//!
//! A rebalance revokes a partition from its old owner (which drops that
//! partition's state and pending triggers, having acknowledged everything it
//! published) before the new owner is assigned it, so the new owner's read
//! sees every id the old owner published for it. A broker that completes a
//! join without waiting for the other members to rejoin (tansu) assigns
//! first and revokes later; the pipeline therefore reads on only a few
//! seconds after a new assignment, by when the old owner has heard of the
//! rebalance and stopped.
//!
//! The dead-letter topic is read the same way: a replay decodes the same bad
//! records again, and a record already dead-lettered (by its source topic,
//! partition and offset, from the headers) is not dead-lettered twice.
//!
//! Memory: a 128-bit number per violation and evidence record (about 30
//! bytes with the map's overhead) until no replay can decide its trigger
//! again (see [`held`]), and one offset per source partition.

mod held;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::TopicPartitionList;

use crate::config::Config;
use crate::embedded::read_each;
use crate::schema::Topic;
use held::Held;
pub use held::{Bound, BOUND_HEADER};

pub struct Published {
    bootstrap: String,
    properties: BTreeMap<String, String>,
    group_id: String,
    /// The input topics, in [`Topic::ALL`] order.
    input_topics: [String; 4],
    topic: String,
    dead_letter_topic: String,
    /// Violation and evidence ids (themselves hashes: hashed fast).
    ids: Held,
    /// Ids whose retraction (an amendment) is published.
    retracted: foldhash::HashSet<u128>,
    /// Next offset to read per partition of the violations topic.
    next: BTreeMap<i32, i64>,
    /// The same for the dead-letter topic.
    dead_next: BTreeMap<i32, i64>,
    /// Highest source offset dead-lettered, per source topic and partition.
    dead_lettered: HashMap<(String, i32), i64>,
    evidence_topic: String,
    /// The same for the evidence topic.
    evidence_next: BTreeMap<i32, i64>,
    /// The last evidence record per partition: its sequence and hash.
    evidence_tails: BTreeMap<i32, (i64, String)>,
    /// With alerts on: how far back (`resolve_after`) a violation read on
    /// is handed back for its alert to be sent again.
    alert_window_ms: Option<i64>,
    /// Violations read on within that window, in topic order, until taken.
    earlier: Vec<EarlierViolation>,
    /// The group's committed floors being asked for, off the pipeline's
    /// thread, and when they last were.
    fetching: Option<tokio::task::JoinHandle<anyhow::Result<Committed>>>,
    fetched_at: Option<Instant>,
}

type Committed = BTreeMap<(String, i32), i64>;

/// How often the group's committed floors are asked for, to forget ids.
const FORGET_EVERY: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A violation record read on that may still want its alert.
pub struct EarlierViolation {
    pub payload: Vec<u8>,
    pub retraction: bool,
    id: u128,
}

/// Violation ids are 32 hex digits.
fn key(id: &str) -> Option<u128> {
    u128::from_str_radix(id, 16).ok()
}

impl Published {
    pub fn new(config: &Config) -> Published {
        Published {
            bootstrap: config.bootstrap_servers.clone(),
            properties: config.consumer_properties.clone(),
            group_id: config.group_id.clone(),
            input_topics: config.input_topics.clone(),
            topic: config.violations_topic.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
            ids: Held::default(),
            retracted: foldhash::HashSet::default(),
            next: BTreeMap::new(),
            dead_next: BTreeMap::new(),
            dead_lettered: HashMap::new(),
            evidence_topic: config.evidence_topic.clone(),
            evidence_next: BTreeMap::new(),
            evidence_tails: BTreeMap::new(),
            alert_window_ms: config.alerts.as_ref().map(|a| a.resolve_after.as_millis() as i64),
            earlier: Vec::new(),
            fetching: None,
            fetched_at: None,
        }
    }

    /// The violations read on since the last call that were published
    /// within the alert window: the last record of each id, in topic order.
    pub fn take_earlier(&mut self) -> Vec<EarlierViolation> {
        let mut seen = HashSet::new();
        let mut last: Vec<EarlierViolation> =
            std::mem::take(&mut self.earlier).into_iter().rev().filter(|e| seen.insert(e.id)).collect();
        last.reverse();
        last
    }

    /// Reads the violations, dead-letter and evidence topics on towards
    /// their current ends for at most `budget`. What was read stands: when
    /// the budget ends first, the next call goes on from there.
    pub async fn catch_up(&mut self, budget: Duration) -> anyhow::Result<CatchUp> {
        let deadline = Instant::now() + budget;
        let since = self.alert_window_ms.map(|w| crate::pipeline::wall_ms() - w);
        let mut read = 0;
        for output in [Output::Violations { since }, Output::DeadLetters, Output::Evidence] {
            let (topic, from) = match output {
                Output::Violations { .. } => (self.topic.clone(), self.next.clone()),
                Output::DeadLetters => (self.dead_letter_topic.clone(), self.dead_next.clone()),
                Output::Evidence => (self.evidence_topic.clone(), self.evidence_next.clone()),
            };
            let (bootstrap, properties) = (self.bootstrap.clone(), self.properties.clone());
            let left = deadline.saturating_duration_since(Instant::now());
            // Records are handed over in batches as they are read, so a
            // long topic costs neither a copy of itself nor lost progress.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Seen>>(4);
            let reading = tokio::task::spawn_blocking(move || {
                let mut bounds = Bounds::default();
                let mut batch = Vec::with_capacity(SEEN_BATCH);
                let end = read_each(&bootstrap, &properties, &topic, &from, left, |m| {
                    batch.push(Seen::of(output, m, &mut bounds));
                    if batch.len() == SEEN_BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(SEEN_BATCH));
                        // Only fails when catch-up itself was dropped.
                        let _ = tx.blocking_send(full);
                    }
                    std::ops::ControlFlow::Continue(())
                });
                if !batch.is_empty() {
                    let _ = tx.blocking_send(batch);
                }
                end
            });
            while let Some(batch) = rx.recv().await {
                read += batch.len();
                for seen in batch {
                    self.keep(output, seen);
                }
            }
            if !reading.await?? {
                return Ok(CatchUp { read, done: false });
            }
        }
        Ok(CatchUp { read, done: true })
    }

    /// Holds what one record read back says was published.
    fn keep(&mut self, output: Output, seen: Seen) {
        let next = match output {
            Output::Violations { .. } => &mut self.next,
            Output::DeadLetters => &mut self.dead_next,
            Output::Evidence => &mut self.evidence_next,
        };
        let n = next.entry(seen.partition).or_insert(0);
        *n = (*n).max(seen.offset + 1);
        if let Some(id) = seen.id {
            if seen.retraction {
                self.retracted.insert(id);
            }
            self.ids.insert(id, seen.bound.as_ref());
            if let Some(payload) = seen.recent {
                self.earlier.push(EarlierViolation { payload, retraction: seen.retraction, id });
            }
        }
        if let Some(link) = seen.link {
            self.evidence_tails.insert(seen.partition, link);
        }
        if let Some((topic, partition, offset)) = seen.source {
            self.dead_lettered(&topic, partition, offset);
        }
    }

    /// The last evidence record of `partition`: its sequence and hash.
    pub fn evidence_tail(&self, partition: i32) -> Option<(i64, String)> {
        self.evidence_tails.get(&partition).cloned()
    }

    pub fn set_evidence_tail(&mut self, partition: i32, sequence: i64, hash: String) {
        self.evidence_tails.insert(partition, (sequence, hash));
    }

    /// Whether the record at `topic/partition/offset` is already on the
    /// dead-letter topic.
    pub fn is_dead_lettered(&self, topic: &str, partition: i32, offset: i64) -> bool {
        self.dead_lettered.get(&(topic.to_string(), partition)).is_some_and(|m| offset <= *m)
    }

    /// Records that `topic/partition/offset` was dead-lettered.
    pub fn dead_lettered(&mut self, topic: &str, partition: i32, offset: i64) {
        let max = self.dead_lettered.entry((topic.to_string(), partition)).or_insert(offset);
        *max = (*max).max(offset);
    }

    pub fn contains(&self, id: &str) -> bool {
        key(id).is_some_and(|k| self.ids.contains(k))
    }

    /// Holds `id`, published with `bound` (see [`held`]).
    pub fn insert(&mut self, id: &str, bound: Option<&Arc<Bound>>) {
        if let Some(k) = key(id) {
            self.ids.insert(k, bound);
        }
    }

    /// Forgets the ids whose triggers no replay can decide again: the
    /// decided-below floors the group committed (see
    /// [`crate::source::floors`]) have passed their bounds. The floors are
    /// asked of the broker every [`FORGET_EVERY`] in the background, and
    /// used when they come (committed floors only move on, so older ones
    /// are safe); when the broker cannot say, nothing is forgotten. Nor
    /// is what `kept` (the lowest offset of a trigger still kept here for
    /// amendments, per topic and partition) has not passed: an amendment
    /// may retract it. Returns how many ids were forgotten.
    pub fn forget_decided(&mut self, kept: &Committed) -> usize {
        use futures::FutureExt;
        let fetched = match self.fetching.take() {
            Some(handle) if handle.is_finished() => handle.now_or_never(),
            other => {
                self.fetching = other;
                None
            }
        };
        let due = self.fetched_at.is_none_or(|at| at.elapsed() >= FORGET_EVERY);
        if self.fetching.is_none() && due {
            let topics = self.ids.bounded_topics();
            if !topics.is_empty() {
                let (bootstrap, properties) = (self.bootstrap.clone(), self.properties.clone());
                let (group, inputs) = (self.group_id.clone(), self.input_topics.clone());
                self.fetched_at = Some(Instant::now());
                self.fetching = Some(tokio::task::spawn_blocking(move || {
                    committed_floors(&bootstrap, &properties, &group, &inputs, &topics, FETCH_TIMEOUT)
                }));
            }
        }
        let mut committed = match fetched {
            None => return 0,
            Some(Ok(Ok(committed))) => committed,
            Some(Ok(Err(e))) => {
                tracing::debug!(error = %e, "cannot read the group's committed offsets; forgetting no ids yet");
                return 0;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "reading the group's committed offsets failed");
                return 0;
            }
        };
        for (tp, low) in kept {
            if let Some(c) = committed.get_mut(tp) {
                *c = (*c).min(*low);
            }
        }
        let gone = self.ids.forget_passed(&committed);
        for id in &gone {
            self.retracted.remove(id);
        }
        gone.len()
    }

    pub fn is_retracted(&self, id: &str) -> bool {
        key(id).is_some_and(|k| self.retracted.contains(&k))
    }

    pub fn retract(&mut self, id: &str) {
        if let Some(k) = key(id) {
            self.retracted.insert(k);
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The bounds of records read back, consecutive equal headers sharing one.
#[derive(Default)]
struct Bounds {
    last: Option<(String, Arc<Bound>)>,
}

impl Bounds {
    fn of(&mut self, text: Option<&str>) -> Option<Arc<Bound>> {
        let text = text?;
        if let Some((last, bound)) = &self.last {
            if last == text {
                return Some(bound.clone());
            }
        }
        let bound = Arc::new(Bound::parse(text)?);
        self.last = Some((text.to_string(), bound.clone()));
        Some(bound)
    }
}

/// The decided-below floors `group` has committed for every partition of
/// `topics` (names among `inputs`, in [`crate::schema::Topic::ALL`] order);
/// the access topic's ride on the change topic's commits.
fn committed_floors(
    bootstrap: &str,
    properties: &BTreeMap<String, String>,
    group: &str,
    inputs: &[String; 4],
    topics: &[String],
    timeout: Duration,
) -> anyhow::Result<Committed> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", bootstrap).set("enable.auto.commit", "false");
    for (k, v) in properties.iter().filter(|(k, _)| k.as_str() != "group.instance.id") {
        client.set(k, v);
    }
    // Never subscribes, so never joins the group: it only asks for its offsets.
    client.set("group.id", group);
    let consumer: BaseConsumer = client.create()?;
    let (change, access) = (&inputs[Topic::Change.index()], &inputs[Topic::Access.index()]);
    let mut asked: Vec<&String> = topics.iter().map(|t| if t == access { change } else { t }).collect();
    asked.sort();
    asked.dedup();
    let mut list = TopicPartitionList::new();
    for topic in asked {
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        for t in metadata.topics() {
            for p in t.partitions() {
                list.add_partition(topic, p.id());
            }
        }
    }
    let committed = consumer.committed_offsets(list, timeout)?;
    Ok(crate::source::floors::floors_of(&committed, change, access).into_iter().collect())
}

/// The three output topics read back, and what each says.
#[derive(Clone, Copy)]
enum Output {
    /// With the start of the alert window, when alerts are on.
    Violations {
        since: Option<i64>,
    },
    DeadLetters,
    Evidence,
}

/// How far a read back got: records read, and whether to the end.
#[derive(Debug)]
pub struct CatchUp {
    pub read: usize,
    pub done: bool,
}

const SEEN_BATCH: usize = 4096;

/// What catch-up keeps of one record read back (never its payload, but
/// for a violation that may still want its alert).
struct Seen {
    partition: i32,
    offset: i64,
    id: Option<u128>,
    bound: Option<Arc<Bound>>,
    retraction: bool,
    recent: Option<Vec<u8>>,
    /// An evidence record's sequence and hash.
    link: Option<(i64, String)>,
    /// A dead letter's source topic, partition and offset.
    source: Option<(String, i32, i64)>,
}

impl Seen {
    fn of(output: Output, m: &BorrowedMessage<'_>, bounds: &mut Bounds) -> Seen {
        let headers = m.headers();
        let header = |name: &str| -> Option<&str> {
            let h = headers?.iter().find(|h| h.key == name)?;
            std::str::from_utf8(h.value?).ok()
        };
        let mut seen = Seen {
            partition: m.partition(),
            offset: m.offset(),
            id: None,
            bound: None,
            retraction: false,
            recent: None,
            link: None,
            source: None,
        };
        let id = || m.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(key);
        match output {
            Output::Violations { since } => {
                seen.id = id();
                seen.retraction = header("vigil.status") == Some("retracted");
                let recent = since.is_some_and(|since| m.timestamp().to_millis().is_some_and(|t| t >= since));
                seen.recent = if recent && seen.id.is_some() { m.payload().map(<[u8]>::to_vec) } else { None };
            }
            Output::DeadLetters => {
                let partition = header("vigil.source.partition").and_then(|p| p.parse().ok());
                let offset = header("vigil.source.offset").and_then(|o| o.parse().ok());
                if let (Some(topic), Some(partition), Some(offset)) = (header("vigil.source.topic"), partition, offset)
                {
                    seen.source = Some((topic.to_string(), partition, offset));
                }
            }
            Output::Evidence => {
                seen.id = id();
                let sequence = header("vigil.sequence").and_then(|s| s.parse().ok());
                if let (Some(sequence), Some(hash)) = (sequence, header("vigil.hash")) {
                    seen.link = Some((sequence, hash.to_string()));
                }
            }
        }
        if seen.id.is_some() {
            seen.bound = bounds.of(header(BOUND_HEADER));
        }
        seen
    }
}
