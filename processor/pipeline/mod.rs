//! The processing loop: source → decode → state and pending triggers →
//! controls at each tick → sink → offset commit.
//!
//! Order within a tick is what makes a crash safe: violations and dead
//! letters are acknowledged by the broker before state is evicted, and the
//! committed offset of a partition never passes the lowest offset the state
//! still retains. A restart therefore replays every event a future decision
//! may need, and re-decides nothing differently (violation ids are
//! deterministic).

mod decide;
mod evidence;
mod ingest;
mod observe;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use self::ingest::Decoding;
use crate::config::Config;
use crate::controls::{Amendment, ControlSet, ControlSource};
use crate::decode::{Decoder, SchemaResolver};
use crate::metrics::Metrics;
use crate::published::{Bound, Published};
use crate::schema::{Catalog, Topic};
use crate::sink::{DeadLetter, Sink};
use crate::source::{BrokerHealth, Source};
use crate::state::State;
use crate::time::{TopicPartition, Watermarks};
use crate::violation::Violation;

/// A [`Bound`] per trigger topic, in [`Topic::ALL`] order.
type Bounds = [Option<Arc<Bound>>; 4];

/// What the pipeline has done so far; published after every tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    pub consumed: u64,
    /// When the first message was taken in.
    pub first_consumed_at: Option<Instant>,
    /// When the last batch of messages was taken in (status is published
    /// each tick, this instant when it happened).
    pub last_consumed_at: Option<Instant>,
    pub rejected: u64,
    pub violations: u64,
    pub pending_triggers: usize,
    pub watermark: Option<i64>,
    pub caught_up: bool,
    /// Whether it decides: it holds partitions and has read the violations
    /// topic on since they were assigned.
    pub deciding: bool,
    pub ticks: u64,
}

/// Called with each published violation.
type ViolationHook = Box<dyn Fn(&Violation) + Send>;

/// Most messages decoded as one batch.
const MAX_BATCH: usize = 8192;

pub struct Pipeline {
    config: Config,
    catalog: Arc<Catalog>,
    /// Shared with the pool thread that decodes ahead (`ingest`).
    decoders: Arc<[Decoder; 4]>,
    state: State,
    controls: ControlSet,
    watermarks: Watermarks,
    metrics: Arc<Metrics>,
    source: Source,
    sink: Sink,
    /// Ids already on the violations topic; never published again.
    published: Published,
    /// Read the violations topic on before the next decision (start-up, new
    /// partitions), and not before this instant.
    catch_up: Option<Instant>,
    /// The decision under way, started at a tick (see `decide`).
    decision: Option<decide::Decision>,
    /// What late events changed, waiting to be published with the next
    /// decision's conclusion.
    amendments: Vec<(Amendment, Vec<String>)>,
    /// Partitions of the change topic the group assigned here; access
    /// triggers of the same partition numbers are decided here.
    owned_change: Vec<i32>,
    next_offsets: BTreeMap<TopicPartition, i64>,
    /// Alertmanager, when configured.
    alerts: Option<crate::alerts::Alerts>,
    /// Partitions with a consumer-lag series, to remove when no longer read.
    lag_series: BTreeSet<TopicPartition>,
    dead: Vec<DeadLetter>,
    status: Status,
    status_tx: watch::Sender<Status>,
    /// Called with each violation once it is acknowledged (the demo prints them).
    on_violation: Option<ViolationHook>,
}

impl Pipeline {
    /// Builds every part; a bad control or config stops here.
    pub async fn new(config: Config, sources: &[ControlSource], metrics: Arc<Metrics>) -> anyhow::Result<Pipeline> {
        let catalog = Catalog::builtin().map_err(anyhow::Error::msg)?;
        let resolver = Arc::new(
            SchemaResolver::new(config.schemas_dir.as_deref(), config.schema_registry_url.clone())
                .map_err(anyhow::Error::msg)?,
        );
        let decoders = Arc::new(Topic::ALL.map(|t| {
            Decoder::new(catalog.event(t).clone(), resolver.clone(), config.formats[t.index()], config.time_bounds)
                .with_native(config.native.clone())
                .with_max_bytes(config.max_message_bytes)
        }));
        let (state, controls) = crate::engine::plan(&catalog, sources, &config.identities).await?;
        if config.identities.is_empty() {
            tracing::info!("no [identities] in the config: people are compared by their names as the tools spell them");
        }
        let alerts = config.alerts.as_ref().map(|a| crate::alerts::Alerts::start(a, metrics.clone()));
        let series: Vec<(&str, &str)> = controls
            .controls()
            .iter()
            .filter(|c| !c.meta.evidence)
            .map(|c| (c.meta.id.as_str(), c.meta.severity.name()))
            .collect();
        metrics.init_series(&series);
        let health = Arc::new(BrokerHealth::default());
        health.report_to(metrics.ready.clone());
        let source = Source::new(&config, health.clone())?;
        let sink = Sink::new(&config, catalog.violation.clone(), health)?;
        let (status_tx, _) = watch::channel(Status::default());
        let published = Published::new(&config);
        Ok(Pipeline {
            published,
            catch_up: Some(Instant::now()),
            owned_change: Vec::new(),
            amendments: Vec::new(),
            decision: None,
            watermarks: Watermarks::new(config.watermarks),
            config,
            catalog,
            decoders,
            state,
            controls,
            metrics,
            source,
            sink,
            next_offsets: BTreeMap::new(),
            lag_series: BTreeSet::new(),
            alerts,
            dead: Vec::new(),
            status: Status::default(),
            status_tx,
            on_violation: None,
        })
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status_tx.subscribe()
    }

    pub fn on_violation(&mut self, f: impl Fn(&Violation) + Send + 'static) {
        self.on_violation = Some(Box::new(f));
    }

    /// Runs until `shutdown` turns true. Errors are external failures that
    /// retries did not cure (the broker refused outputs) or internal ones;
    /// uncommitted input is replayed on restart.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        tracing::info!(
            controls = self.controls.controls().len(),
            retention_s = ?Topic::ALL.map(|t| self.controls.retention(t).as_secs()),
            "pipeline started"
        );
        let mut next_tick = Instant::now() + self.config.tick;
        // A full batch is decoded on the pool while the one before it is
        // stored (see `ingest`).
        let mut decoding: Option<Decoding> = None;
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let mut messages = self.source.recv_batch(MAX_BATCH, next_tick).await?;
            // recv_batch already dropped what it read from revoked partitions
            // before their revocation.
            let revoked = self.source.take_revoked();
            let assigned = self.source.take_assigned();
            if !revoked.is_empty() || assigned {
                // What was read before is stored, and what was decided while
                // the partitions were ours published, before their state goes.
                if let Some(earlier) = decoding.take() {
                    self.store(earlier).await?;
                }
                self.settle().await?;
            }
            if !revoked.is_empty() {
                self.revoke(&revoked);
            }
            if assigned {
                // The access topic is read again from the beginning.
                messages.retain(|m| m.topic != Topic::Access);
                self.reassigned();
            }
            let full = messages.len() >= MAX_BATCH;
            let earlier = decoding.replace(self.decode(messages));
            if let Some(earlier) = earlier {
                self.store(earlier).await?;
            }
            // Past a batch that was not full the stream has paused: store it
            // now rather than when the next one comes.
            if !full {
                if let Some(batch) = decoding.take() {
                    self.store(batch).await?;
                }
            }
            self.conclude_if_done().await?;
            if Instant::now() >= next_tick {
                self.tick().await?;
                next_tick = Instant::now() + self.config.tick;
            }
        }
        if let Some(batch) = decoding.take() {
            self.store(batch).await?;
        }
        self.settle().await?;
        self.metrics.ready.set(0);
        Ok(())
    }

    /// The group's assignment changed: access triggers now belong to
    /// different partitions, so the access topic is read again from the
    /// beginning; the violations topic is read on before the next decision.
    fn reassigned(&mut self) {
        self.owned_change =
            self.source.assignment().into_iter().filter(|(t, _)| *t == Topic::Change).map(|(_, p)| p).collect();
        let access: Vec<TopicPartition> =
            self.next_offsets.keys().copied().filter(|(t, _)| *t == Topic::Access).collect();
        self.state.drop_partitions(&access);
        self.controls.drop_partitions(&access);
        self.watermarks.forget(&access);
        for tp in &access {
            self.next_offsets.remove(tp);
        }
        self.source.read_access_in_full(true);
        self.watermarks.reset();
        self.catch_up = Some(Instant::now() + REASSIGNMENT_SETTLE);
    }

    /// Forgets what belongs to revoked partitions: their next owner replays
    /// them from the committed offsets, which never passed anything they need.
    fn revoke(&mut self, revoked: &[TopicPartition]) {
        self.state.drop_partitions(revoked);
        self.controls.drop_partitions(revoked);
        self.watermarks.forget(revoked);
        // What remains may be behind what was revoked (or nothing remains):
        // the watermark is recomputed from it, never kept from before.
        self.watermarks.reset();
        self.owned_change.retain(|p| !revoked.contains(&(Topic::Change, *p)));
        for tp in revoked {
            self.next_offsets.remove(tp);
        }
        tracing::info!(partitions = revoked.len(), "dropped the state and triggers of revoked partitions");
    }

    /// Commits, per partition, the lowest offset still retained in state or
    /// held by an undecided trigger, or the next offset to read when neither
    /// holds anything of the partition.
    fn commit(&mut self) -> anyhow::Result<()> {
        let retained = self.state.low_water_offsets();
        let pending = self.controls.low_water_offsets();
        let offsets: BTreeMap<TopicPartition, i64> = self
            .next_offsets
            .iter()
            .map(|(tp, next)| {
                let low = [retained.get(tp), pending.get(tp)].into_iter().flatten().fold(*next, |a, b| a.min(*b));
                (*tp, low)
            })
            .collect();
        // Below a floor every trigger is decided: a replay takes those rows
        // in as context only. Not the decided triggers kept for amendments:
        // that queue is kept by whole batches, and a batch read in one go
        // at start-up spans the whole stream, holding the floor at its
        // start — and a replay would judge months-old triggers beside a
        // state that keeps weeks.
        let floors: BTreeMap<TopicPartition, i64> = self
            .next_offsets
            .iter()
            .filter(|((t, p), _)| *t != Topic::Access || self.owned_change.contains(p))
            .map(|(tp, next)| (*tp, pending.get(tp).map_or(*next, |low| (*low).min(*next))))
            .collect();
        self.source.commit(&offsets, &floors)?;
        Ok(())
    }

    /// Per trigger topic, the next offsets to read of its partitions read
    /// here: every trigger decided so far lies below them.
    fn trigger_bounds(&self) -> Bounds {
        Topic::ALL.map(|t| {
            let next = self.next_offsets.iter().filter(|((topic, _), _)| *topic == t).map(|((_, p), o)| (*p, *o));
            Bound::new(&self.config.input_topics[t.index()], next).map(Arc::new)
        })
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }
}

/// The wall clock in epoch milliseconds.
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Longest wait for the violations topic to be read on.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long after a new assignment the violations topic is read on: the
/// partitions' previous owners may still be publishing. Kafka revokes them
/// before it assigns them elsewhere, but a broker that completes a join
/// without waiting for the other members (tansu) assigns first, and the old
/// owner hears of it at its next heartbeat (every second, see the source)
/// and stops after its current tick.
const REASSIGNMENT_SETTLE: Duration = Duration::from_secs(3);

/// How long to wait between looks at a status channel.
pub const STATUS_POLL: Duration = Duration::from_millis(50);
