//! The reader thread: polls both consumers and hands their messages to the
//! pipeline in batches, so reading the next batch overlaps taking in the
//! last one (before, the pipeline's own task awaited each message, and read
//! nothing while it decoded and stored). The group's partitions are read
//! from queues of their own, many messages a call (see `queues`).
//!
//! What the consumers report between messages travels in the same channel,
//! in order: a revocation (served inside a poll of this thread) follows
//! every message read before it and precedes every message read after it,
//! so the pipeline drops exactly what it read from revoked partitions
//! before they were revoked. The access reader is assigned here too, on the
//! pipeline's command, and its messages read before that are told apart by
//! the marker that follows the assignment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message};
use rdkafka::TopicPartitionList;

use super::context::{ReaderContext, SourceContext};
use super::queues::{ConsumerQueue, Fetched, PartitionQueue};
use super::{topic_named, InMessage};
use crate::schema::Topic;

/// What the reader thread hands over, in the order it happened.
pub(super) enum Item {
    Messages(Vec<InMessage>),
    /// Partitions of the group's topics revoked (topic name, partition).
    Revoked(Vec<(String, i32)>),
    /// The group assigned partitions here; the decided-below floors
    /// committed with their offsets (see `floors`).
    Assigned(Vec<(crate::time::TopicPartition, i64)>),
    /// The access reader was (re)assigned as the command numbered `.0`
    /// asked: `Ok` with its partitions, or why not. Its messages before this
    /// marker belong to an older assignment.
    AccessAssigned(u64, Result<Vec<i32>, String>),
}

/// What the pipeline asks of the reader thread.
pub(super) enum Command {
    /// Read these partitions of the access topic from the beginning (the
    /// number is echoed in the marker).
    AssignAccess(u64, TopicPartitionList, Vec<i32>),
}

/// How long one ask for the committed offsets of new partitions waits.
const FLOORS_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages the thread gathers before it hands them over (sooner when the
/// consumers have nothing more for now).
const FLUSH_AT: usize = 2048;

/// Batches waiting for the pipeline; past this the thread waits, and
/// librdkafka's own queue bounds what is fetched meanwhile.
const CHANNEL_BATCHES: usize = 8;

/// How long one poll waits when neither consumer had anything: the longest
/// a message in a partition's own queue (see `queues`) or the access
/// reader's waits for the group's consumer to wake up.
const IDLE_POLL: Duration = Duration::from_millis(10);

/// The thread and both ends of its channels.
pub(super) struct Reader {
    pub(super) items: tokio::sync::mpsc::Receiver<Item>,
    commands: mpsc::Sender<Command>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    pub(super) fn start(
        consumer: Arc<BaseConsumer<SourceContext>>,
        broadcast: Arc<BaseConsumer<ReaderContext>>,
        topics: [String; 4],
    ) -> std::io::Result<Reader> {
        let (tx, items) = tokio::sync::mpsc::channel(CHANNEL_BATCHES);
        let (commands, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("vigil-reader".into()).spawn({
            let stop = stop.clone();
            move || {
                let mut thread = Thread {
                    topics,
                    tx,
                    batch: Gathered::default(),
                    access: false,
                    stop: stop.clone(),
                    main: ConsumerQueue::of(&consumer),
                    queues: Vec::new(),
                };
                thread.run(&consumer, &broadcast, &rx, &stop);
            }
        })?;
        Ok(Reader { items, commands, stop, thread: Some(thread) })
    }

    pub(super) fn command(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A thread waiting to hand a batch over gives up once no one takes it.
        self.items.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Thread {
    topics: [String; 4],
    tx: tokio::sync::mpsc::Sender<Item>,
    batch: Gathered,
    /// Whether the access reader has partitions to poll.
    access: bool,
    stop: Arc<AtomicBool>,
    /// The group consumer's queue, to see that it is empty before the
    /// partitions' own queues are read (see `queues`).
    main: Option<ConsumerQueue>,
    /// The assigned partitions' own queues.
    queues: Vec<PartitionQueue>,
}

/// The pipeline is gone: nothing more to hand over.
struct Closed;

impl Thread {
    fn run(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
        broadcast: &BaseConsumer<ReaderContext>,
        commands: &mpsc::Receiver<Command>,
        stop: &AtomicBool,
    ) {
        let mut revocations = consumer.context().revocations.load(Ordering::SeqCst);
        while !stop.load(Ordering::Relaxed) {
            let step = (|| {
                while let Ok(Command::AssignAccess(number, list, partitions)) = commands.try_recv() {
                    self.flush()?;
                    let assigned = broadcast.assign(&list).map(|()| partitions).map_err(|e| e.to_string());
                    self.access = assigned.as_ref().is_ok_and(|p| !p.is_empty());
                    self.send(Item::AccessAssigned(number, assigned))?;
                }
                let mut read = 0;
                while self.batch.len() < FLUSH_AT {
                    let polled = self.poll_group(consumer, Duration::ZERO, &mut revocations)?;
                    if !polled {
                        break;
                    }
                    read += 1;
                }
                // What the consumer's queue holds of a partition came before
                // what its own queue holds.
                if self.main.as_ref().is_none_or(|q| q.len() == 0) {
                    read += self.drain_partitions(consumer);
                }
                while self.access && self.batch.len() < FLUSH_AT {
                    let Some(m) = broadcast.poll(Duration::ZERO) else { break };
                    match m {
                        Ok(m) => {
                            self.keep(&m);
                            read += 1;
                        }
                        Err(e) => consumer.context().reports.health.note(&e, "access reader poll"),
                    }
                }
                // Hand over a full batch, or what there is once the
                // consumers have nothing more for now.
                if self.batch.len() >= FLUSH_AT || (read == 0 && !self.batch.is_empty()) {
                    self.flush()?;
                }
                if read == 0 {
                    self.poll_group(consumer, IDLE_POLL, &mut revocations)?;
                }
                Ok::<(), Closed>(())
            })();
            if step.is_err() {
                break;
            }
        }
    }

    /// Polls the group's consumer once; hands over what a rebalance served
    /// inside the poll reported. True if a message was read.
    fn poll_group(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
        timeout: Duration,
        revocations: &mut u64,
    ) -> Result<bool, Closed> {
        let polled = consumer.poll(timeout);
        let context = consumer.context();
        let now = context.revocations.load(Ordering::SeqCst);
        if now != *revocations {
            *revocations = now;
            self.flush()?;
            let revoked = std::mem::take(&mut *context.revoked.lock().unwrap_or_else(|p| p.into_inner()));
            self.queues.retain(|q| {
                !revoked.iter().any(|(name, p)| *p == q.partition && self.topics[q.topic.index()] == *name)
            });
            self.send(Item::Revoked(revoked))?;
        }
        if context.assigned.swap(false, Ordering::SeqCst) {
            self.flush()?;
            // Before any message of the new partitions is handed over.
            let floors = self.committed_floors(consumer)?;
            self.send(Item::Assigned(floors))?;
            self.split_assigned(consumer);
        }
        match polled {
            Some(Ok(m)) => {
                self.keep(&m);
                Ok(true)
            }
            Some(Err(e)) => {
                // Broker and network errors are retried inside librdkafka;
                // they surface here for readiness and visibility only.
                context.reports.health.note(&e, "consumer poll");
                Ok(false)
            }
            None => Ok(false),
        }
    }

    /// The floors committed with the assignment's offsets, asked until the
    /// group coordinator answers: without them a replay would decide again
    /// what was decided long ago (see `floors`), so nothing is read before.
    fn committed_floors(
        &self,
        consumer: &BaseConsumer<SourceContext>,
    ) -> Result<Vec<(crate::time::TopicPartition, i64)>, Closed> {
        let topic_of = |name: &str| topic_named(&self.topics, name);
        loop {
            let asked = consumer.assignment().and_then(|list| consumer.committed_offsets(list, FLOORS_TIMEOUT));
            match asked {
                Ok(committed) => {
                    let (change, access) = (&self.topics[Topic::Change.index()], &self.topics[Topic::Access.index()]);
                    let floors = super::floors::floors_of(&committed, change, access);
                    return Ok(floors
                        .into_iter()
                        .filter_map(|((name, p), o)| Some(((topic_of(&name)?, p), o)))
                        .collect());
                }
                Err(e) => {
                    consumer.context().reports.health.note(&e, "reading the committed offsets of new partitions");
                    tracing::warn!(error = %e, "cannot read the committed offsets of new partitions; asking again");
                }
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(Closed);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Splits the queue of every assigned partition not split yet.
    fn split_assigned(&mut self, consumer: &BaseConsumer<SourceContext>) {
        let Ok(assignment) = consumer.assignment() else { return };
        for e in assignment.elements() {
            let Some(topic) = topic_named(&self.topics, e.topic()) else { continue };
            if self.queues.iter().any(|q| q.topic == topic && q.partition == e.partition()) {
                continue;
            }
            match PartitionQueue::split(consumer, e.topic(), topic, e.partition()) {
                Some(queue) => self.queues.push(queue),
                // Its messages keep coming through the consumer's queue.
                None => {
                    tracing::warn!(topic = e.topic(), partition = e.partition(), "cannot split the partition's queue")
                }
            }
        }
    }

    /// Takes what the partitions' own queues hold, up to a full batch.
    fn drain_partitions(&mut self, consumer: &BaseConsumer<SourceContext>) -> usize {
        let mut read = 0;
        for queue in &mut self.queues {
            let room = FLUSH_AT.saturating_sub(self.batch.pending.len());
            let (topic, partition) = (queue.topic, queue.partition);
            let batch = &mut self.batch;
            read += queue.drain(
                room,
                |m| batch.push_fetched(topic, partition, m),
                |e| consumer.context().reports.health.note(&e, "partition queue"),
            );
        }
        read
    }

    fn keep(&mut self, m: &impl Message) {
        self.batch.push(&self.topics, m);
    }

    fn flush(&mut self) -> Result<(), Closed> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = self.batch.take();
        self.send(Item::Messages(batch))
    }

    fn send(&self, item: Item) -> Result<(), Closed> {
        self.tx.blocking_send(item).map_err(|_| Closed)
    }
}

/// A message read but not yet handed over: its key and payload are ranges
/// of the batch's arena.
struct Pending {
    topic: Topic,
    partition: i32,
    offset: i64,
    key: Option<std::ops::Range<usize>>,
    payload: Option<std::ops::Range<usize>>,
    headers: crate::decode::Headers,
}

/// The messages of one batch, their keys and payloads copied out of
/// librdkafka's buffers into one allocation (one allocation and one copy per
/// message cost the reader thread a third of its time).
#[derive(Default)]
struct Gathered {
    arena: Vec<u8>,
    pending: Vec<Pending>,
}

impl Gathered {
    fn len(&self) -> usize {
        self.pending.len()
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Keeps `m` unless its topic is not one Vigil reads.
    fn push(&mut self, topics: &[String; 4], m: &impl Message) {
        let name = m.topic();
        let Some(topic) = topic_named(topics, name) else { return };
        let headers = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
            .unwrap_or_default();
        let fetched = Fetched { offset: m.offset(), key: m.key(), payload: m.payload(), headers };
        self.push_fetched(topic, m.partition(), fetched);
    }

    fn push_fetched(&mut self, topic: Topic, partition: i32, m: Fetched<'_>) {
        let arena = &mut self.arena;
        let mut copy = |bytes: &[u8]| {
            let start = arena.len();
            arena.extend_from_slice(bytes);
            start..arena.len()
        };
        let key = m.key.map(&mut copy);
        let payload = m.payload.map(&mut copy);
        self.pending.push(Pending { topic, partition, offset: m.offset, key, payload, headers: m.headers });
    }

    /// The messages, each key and payload a view of the shared arena.
    fn take(&mut self) -> Vec<InMessage> {
        let arena = bytes::Bytes::from(std::mem::replace(&mut self.arena, Vec::with_capacity(ARENA_BYTES)));
        self.pending
            .drain(..)
            .map(|p| InMessage {
                topic: p.topic,
                partition: p.partition,
                offset: p.offset,
                key: p.key.map(|r| arena.slice(r)),
                payload: p.payload.map(|r| arena.slice(r)),
                headers: p.headers,
            })
            .collect()
    }
}

/// What a batch's arena reserves: a full batch of generated events fits.
const ARENA_BYTES: usize = 1 << 20;
