//! Kafka in: one consumer in the configured group, subscribed to the change,
//! ci and deploy topics, and a second one that reads every partition of the
//! access topic in full, outside the group.
//!
//! Change, ci and deploy are co-partitioned (keyed by service, same
//! partition count) and the group uses the range assignor, so an instance
//! owns the same partition numbers of every topic and all the context of a
//! service's decisions. Access grants are keyed by principal: a deploy's
//! deployer may be anywhere, so every instance keeps all of them (they are
//! few). Offsets of the group's partitions are committed only when the
//! pipeline says so; the access reader commits nothing and starts from the
//! beginning whenever the group's assignment changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

mod connect;
mod context;
pub mod floors;
mod queues;
mod reader;

pub use connect::check_connection;
pub use context::{forward_log, BrokerHealth};
use context::{ReaderContext, SourceContext};
use reader::{Command, Item, Reader};

use crate::config::Config;
use crate::decode::Headers;
use crate::lag::Lag;
use crate::schema::Topic;
use crate::time::TopicPartition;

/// A consumed message, detached from the consumer.
#[derive(Clone, Debug)]
pub struct InMessage {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
    /// Views of the batch's shared buffer (see `reader`).
    pub key: Option<bytes::Bytes>,
    pub payload: Option<bytes::Bytes>,
    /// The record's headers (CloudEvents binary mode carries its attributes
    /// here); empty, and unallocated, for most records.
    pub headers: Headers,
}

/// Which of Vigil's input topics `name` is, given their configured names.
fn topic_named(topics: &[String; 4], name: &str) -> Option<Topic> {
    Topic::ALL.into_iter().find(|t| topics[t.index()] == name)
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "cannot create the Kafka consumer for {servers}: {source}; check kafka.bootstrap_servers and kafka.properties"
    )]
    Create { servers: String, source: KafkaError },
    #[error("cannot subscribe to {topics}: {source}")]
    Subscribe { topics: String, source: KafkaError },
    #[error("offset commit failed: {0}")]
    Commit(KafkaError),
    #[error("cannot start the thread that reads Kafka: {0}")]
    Thread(std::io::Error),
    #[error("the thread that reads Kafka stopped")]
    ReaderStopped,
}

/// How long a fetch waits for records (librdkafka's default is 500 ms): a
/// quiet partition's fetch returns sooner, so the event that makes a
/// decision due is read sooner.
pub const FETCH_WAIT_MAX_MS: &str = "100";

/// See its use in [`Source::new`].
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// How long a committed offset read for catch-up detection is trusted.
const START_OFFSET_REFRESH: Duration = Duration::from_secs(3);

pub struct Source {
    consumer: Arc<BaseConsumer<SourceContext>>,
    /// Reads the access topic in full.
    broadcast: Arc<BaseConsumer<ReaderContext>>,
    /// Polls both consumers (see `reader`).
    reader: Reader,
    lag: Arc<Lag>,
    /// The access topic's partitions, once known and assigned to `broadcast`
    /// (or asked of the reader thread: see `access_pending`).
    broadcast_partitions: Vec<i32>,
    /// The reader thread has not yet assigned the access reader as last
    /// asked: access messages until it says so are an older assignment's.
    access_pending: bool,
    /// Access assignments asked of the reader thread so far; only the last
    /// one's marker ends `access_pending`.
    access_asked: u64,
    /// What the reader thread reported since the pipeline last asked.
    revoked: Vec<TopicPartition>,
    assigned: bool,
    topics: [String; 4],
    /// Start offsets of partitions nothing has been read from yet.
    start_offsets: HashMap<TopicPartition, (i64, Instant)>,
    /// Watermarks asked of the broker where librdkafka had none cached.
    asked_marks: HashMap<TopicPartition, (Option<(i64, i64)>, Instant)>,
    /// What was last committed per partition: offset and metadata.
    last_commit: BTreeMap<TopicPartition, (i64, String)>,
    /// Decided-below floors read back with the committed offsets of the
    /// partitions assigned here, until this instance's own pass them.
    floors: BTreeMap<TopicPartition, i64>,
}

impl Source {
    pub fn new(config: &Config, health: Arc<BrokerHealth>) -> Result<Source, SourceError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.bootstrap_servers)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            // Hear of a rebalance within a second (librdkafka's default is
            // 3 s): an old owner stops deciding for revoked partitions sooner.
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
            // When Vigil's queue of fetched records is full, librdkafka
            // waits this long before fetching that partition again (1 s by
            // default): reading a backlog then went in bursts, ~0.3 s of
            // reading and ~0.7 s of nothing. The queue's size still bounds
            // what is held.
            .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
            .set("statistics.interval.ms", "5000");
        for (k, v) in &config.consumer_properties {
            client.set(k, v);
        }
        if let Some(id) = &config.instance_id {
            client.set("group.instance.id", id);
        }
        let create_err = |source| SourceError::Create { servers: config.bootstrap_servers.clone(), source };
        let lag = Arc::new(Lag::default());
        let consumer: BaseConsumer<SourceContext> = client
            .create_with_context(SourceContext {
                revoked: Mutex::default(),
                revocations: AtomicU64::default(),
                assigned: AtomicBool::default(),
                reports: ReaderContext { health: health.clone(), lag: lag.clone() },
            })
            .map_err(create_err)?;
        let names: Vec<&str> = Topic::ALL
            .into_iter()
            .filter(|t| *t != Topic::Access)
            .map(|t| config.input_topics[t.index()].as_str())
            .collect();
        consumer.subscribe(&names).map_err(|source| SourceError::Subscribe { topics: names.join(", "), source })?;
        client.set("group.id", format!("{}-access-reader", config.group_id));
        let broadcast: BaseConsumer<ReaderContext> =
            client.create_with_context(ReaderContext { health, lag: lag.clone() }).map_err(create_err)?;
        let (consumer, broadcast) = (Arc::new(consumer), Arc::new(broadcast));
        let reader = Reader::start(consumer.clone(), broadcast.clone(), config.input_topics.clone())
            .map_err(SourceError::Thread)?;
        Ok(Source {
            lag,
            consumer,
            broadcast,
            reader,
            broadcast_partitions: Vec::new(),
            access_pending: false,
            access_asked: 0,
            revoked: Vec::new(),
            assigned: false,
            topics: config.input_topics.clone(),
            start_offsets: HashMap::new(),
            asked_marks: HashMap::new(),
            last_commit: BTreeMap::new(),
            floors: BTreeMap::new(),
        })
    }

    /// Records behind the high watermark, per partition read (librdkafka
    /// statistics, every 5 s).
    pub fn lag(&self) -> Vec<(TopicPartition, i64)> {
        self.lag.snapshot().into_iter().filter_map(|((name, p), lag)| Some(((self.topic_of(&name)?, p), lag))).collect()
    }

    fn topic_of(&self, name: &str) -> Option<Topic> {
        topic_named(&self.topics, name)
    }

    /// Receives about `max` messages from both consumers (the reader
    /// thread's batches), waiting no later than `deadline`. A revocation
    /// during the batch drops what was read from the revoked partitions
    /// before it (their state is dropped too), but keeps what was read after
    /// it: a partition revoked and assigned again within one batch resumes
    /// from the committed offset, and those messages are not delivered twice.
    pub async fn recv_batch(&mut self, max: usize, deadline: Instant) -> Result<Vec<InMessage>, SourceError> {
        let mut out: Vec<InMessage> = Vec::new();
        let deadline = tokio::time::Instant::from_std(deadline);
        while out.len() < max {
            let item = match self.reader.items.try_recv() {
                Ok(item) => item,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, self.reader.items.recv()).await {
                        Ok(Some(item)) => item,
                        Ok(None) => return Err(SourceError::ReaderStopped),
                        Err(_) => break,
                    }
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return Err(SourceError::ReaderStopped),
            };
            self.take(item, &mut out);
        }
        Ok(out)
    }

    /// One item from the reader thread, in the order it happened.
    fn take(&mut self, item: Item, out: &mut Vec<InMessage>) {
        match item {
            Item::Messages(messages) if self.access_pending => {
                out.extend(messages.into_iter().filter(|m| m.topic != Topic::Access));
            }
            Item::Messages(messages) => out.extend(messages),
            Item::Revoked(revoked) => {
                out.retain(|m| {
                    !revoked.iter().any(|(name, p)| *p == m.partition && self.topic_of(name) == Some(m.topic))
                });
                let revoked: Vec<TopicPartition> =
                    revoked.into_iter().filter_map(|(name, p)| self.topic_of(&name).map(|t| (t, p))).collect();
                for (t, p) in &revoked {
                    self.floors.remove(&(*t, *p));
                    if *t == Topic::Change {
                        self.floors.remove(&(Topic::Access, *p));
                    }
                }
                self.revoked.extend(revoked);
            }
            Item::Assigned(floors) => {
                tracing::info!(?floors, "decided-below floors read back");
                self.assigned = true;
                self.floors.extend(floors);
            }
            // An earlier command's marker: what follows it is still stale.
            Item::AccessAssigned(number, _) if number != self.access_asked => {}
            Item::AccessAssigned(_, assigned) => {
                self.access_pending = false;
                if let Err(error) = assigned {
                    let topic = &self.topics[Topic::Access.index()];
                    tracing::warn!(%topic, %error, "cannot assign the access topic");
                    self.broadcast_partitions.clear();
                }
            }
        }
    }

    /// Assigns every partition of the access topic to the access reader,
    /// from the beginning. `restart` re-reads it even if already assigned
    /// (the group's assignment changed, and with it which access triggers
    /// this instance decides). Returns whether the reader is assigned.
    pub fn read_access_in_full(&mut self, restart: bool) -> bool {
        if !self.broadcast_partitions.is_empty() && !restart {
            return true; // assigned, or asked of the reader thread
        }
        if self.consumer.assignment().map_or(true, |a| a.count() == 0) {
            return false; // which access triggers are ours follows the group's assignment
        }
        let topic = &self.topics[Topic::Access.index()];
        let partitions: Vec<i32> = match self.broadcast.fetch_metadata(Some(topic), Duration::from_secs(2)) {
            Ok(m) => m.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect(),
            Err(e) => {
                tracing::warn!(%topic, error = %e, "cannot read the access topic's partitions yet");
                return false;
            }
        };
        let mut list = TopicPartitionList::new();
        for p in &partitions {
            if list.add_partition_offset(topic, *p, Offset::Beginning).is_err() {
                return false;
            }
        }
        if !self.reader.command(Command::AssignAccess(self.access_asked + 1, list, partitions.clone())) {
            return false;
        }
        self.access_asked += 1;
        self.access_pending = true;
        for p in &partitions {
            self.start_offsets.insert((Topic::Access, *p), (0, Instant::now()));
        }
        self.broadcast_partitions = partitions;
        !self.broadcast_partitions.is_empty()
    }

    /// Partitions revoked since the last call: their state and pending
    /// triggers belong to their next owner now.
    pub fn take_revoked(&mut self) -> Vec<TopicPartition> {
        let revoked = std::mem::take(&mut self.revoked);
        for tp in &revoked {
            self.start_offsets.remove(tp);
            self.last_commit.remove(tp);
        }
        revoked
    }

    /// Whether the brokers answer. After librdkafka reported them down, asks
    /// for metadata (briefly blocking) until they do.
    pub fn broker_reachable(&self) -> bool {
        let health = &self.consumer.context().reports.health;
        if !health.down.load(Ordering::SeqCst) {
            return true;
        }
        let topic = &self.topics[Topic::Change.index()];
        if self.consumer.fetch_metadata(Some(topic), Duration::from_millis(500)).is_ok() {
            health.down.store(false, Ordering::SeqCst);
            tracing::info!("the Kafka brokers answer again");
            return true;
        }
        false
    }

    /// True once after partitions were newly assigned.
    pub fn take_assigned(&mut self) -> bool {
        std::mem::take(&mut self.assigned)
    }

    /// The partitions this instance reads: the group's assignment, plus
    /// every access partition.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        let Ok(list) = self.consumer.assignment() else { return Vec::new() };
        let mut out: Vec<TopicPartition> =
            list.elements().iter().filter_map(|e| self.topic_of(e.topic()).map(|t| (t, e.partition()))).collect();
        if !out.is_empty() {
            out.extend(self.broadcast_partitions.iter().map(|p| (Topic::Access, *p)));
        }
        out
    }

    /// True when nothing is left to read on `tp`. `next_offset` is the offset
    /// after the last message read from it, if any was.
    pub fn caught_up(&mut self, tp: TopicPartition, next_offset: Option<i64>) -> bool {
        if tp.0 == Topic::Access && self.access_pending {
            return false; // not yet read from where it was asked to start
        }
        let name = &self.topics[tp.0.index()];
        let cached = match tp.0 {
            Topic::Access => cached_watermarks(&self.broadcast, name, tp.1),
            _ => cached_watermarks(&self.consumer, name, tp.1),
        };
        // librdkafka caches the watermarks from fetch responses; a partition
        // fetched only at its end may have none yet: ask the broker (at most
        // every few seconds per partition).
        let Some((low, high)) = cached.or_else(|| self.asked_watermarks(tp)) else { return false };
        let next = match next_offset {
            Some(n) => n,
            None => match self.start_offset(tp) {
                Some(s) => s.max(low),
                None => return false,
            },
        };
        next >= high
    }

    /// Everything [`Source::caught_up`] looks at for `tp`, for the log line
    /// that names a partition holding the watermark back.
    pub fn describe_progress(&self, tp: TopicPartition, next_offset: Option<i64>) -> String {
        let name = &self.topics[tp.0.index()];
        let cached = match tp.0 {
            Topic::Access => cached_watermarks(&self.broadcast, name, tp.1),
            _ => cached_watermarks(&self.consumer, name, tp.1),
        };
        let position = self
            .consumer
            .position()
            .ok()
            .and_then(|l| l.find_partition(name, tp.1).map(|e| format!("{:?}", e.offset())));
        format!(
            "{:?}/{}: next={next_offset:?} start={:?} cached_marks={cached:?} asked_marks={:?} position={position:?} librdkafka: {}",
            tp.0,
            tp.1,
            self.start_offsets.get(&tp).map(|(s, at)| (*s, at.elapsed())),
            self.asked_marks.get(&tp).map(|(m, at)| (*m, at.elapsed())),
            self.lag.fetch_state(name, tp.1).unwrap_or_default()
        )
    }

    /// Where reading `tp` started: 0 for the access reader, else the group's
    /// committed offset — asked again every few seconds while nothing has
    /// been read, as the previous owner's last commit may land after the
    /// first answer (the fetch then starts later than that answer says).
    fn asked_watermarks(&mut self, tp: TopicPartition) -> Option<(i64, i64)> {
        if let Some((marks, asked)) = self.asked_marks.get(&tp) {
            if asked.elapsed() < START_OFFSET_REFRESH {
                return *marks;
            }
        }
        let name = &self.topics[tp.0.index()];
        let marks = match tp.0 {
            Topic::Access => self.broadcast.fetch_watermarks(name, tp.1, Duration::from_secs(2)),
            _ => self.consumer.fetch_watermarks(name, tp.1, Duration::from_secs(2)),
        }
        .ok();
        self.asked_marks.insert(tp, (marks, Instant::now()));
        marks
    }

    fn start_offset(&mut self, tp: TopicPartition) -> Option<i64> {
        if let Some((s, asked)) = self.start_offsets.get(&tp) {
            if tp.0 == Topic::Access || asked.elapsed() < START_OFFSET_REFRESH {
                return Some(*s);
            }
        }
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topics[tp.0.index()], tp.1);
        let committed = self.consumer.committed_offsets(list, Duration::from_secs(2)).ok()?;
        let offset = match committed.elements().first()?.offset() {
            Offset::Offset(o) => o,
            // Nothing committed: auto.offset.reset=earliest starts at the low mark.
            _ => 0,
        };
        self.start_offsets.insert(tp, (offset, Instant::now()));
        Some(offset)
    }

    /// Commits `offsets` (the next offset to read per partition) where they
    /// or the decided-below `floors` (see [`floors`]) moved since the last
    /// commit. A floor read back on assignment stands until this instance's
    /// own passes it.
    pub fn commit(
        &mut self,
        offsets: &BTreeMap<TopicPartition, i64>,
        floors: &BTreeMap<TopicPartition, i64>,
    ) -> Result<(), SourceError> {
        self.floors.retain(|tp, restored| floors.get(tp).is_none_or(|f| f < restored));
        let floor = |tp: &TopicPartition| -> Option<i64> {
            [floors.get(tp), self.floors.get(tp)].into_iter().flatten().copied().max()
        };
        let mut list = TopicPartitionList::new();
        let mut committing = Vec::new();
        for (tp, offset) in offsets.iter().filter(|(tp, _)| tp.0 != Topic::Access) {
            let access = (tp.0 == Topic::Change).then(|| floor(&(Topic::Access, tp.1))).flatten();
            let metadata = floors::metadata(floor(tp).unwrap_or(*offset).max(*offset), access);
            if self.last_commit.get(tp).is_some_and(|(o, m)| o == offset && *m == metadata) {
                continue;
            }
            let mut e = list.add_partition(&self.topics[tp.0.index()], tp.1);
            e.set_offset(Offset::Offset(*offset)).map_err(SourceError::Commit)?;
            e.set_metadata(&metadata);
            committing.push((*tp, (*offset, metadata)));
        }
        if list.count() == 0 {
            return Ok(());
        }
        self.consumer.commit(&list, CommitMode::Sync).map_err(SourceError::Commit)?;
        self.last_commit.extend(committing);
        Ok(())
    }

    /// The floors read back for `topic`'s partitions that still stand:
    /// rows below them were decided before and are context only.
    pub fn floors(&self, topic: Topic) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.floors.range((topic, i32::MIN)..=(topic, i32::MAX)).map(|((_, p), o)| (*p, *o))
    }
}

/// The low and high offsets librdkafka last saw for a partition in fetch
/// responses; no network round trip. `None` until the first fetch.
fn cached_watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` lives; the topic is
    // a NUL-terminated string that outlives the call; low and high are valid
    // out-pointers. The function only reads librdkafka's cached state.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some((low, high))
}
