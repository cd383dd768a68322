//! The processing loop: source → decode → state and pending triggers →
//! controls at each tick → sink → offset commit.
//!
//! Order within a tick is what makes a crash safe: violations and dead
//! letters are acknowledged by the broker before state is evicted, and the
//! committed offset of a partition never passes the lowest offset the state
//! still retains. A restart therefore replays every event a future decision
//! may need, and re-decides nothing differently (violation ids are
//! deterministic).

mod evidence;
mod ingest;
mod observe;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::Config;
use crate::controls::{Amendment, ControlSet, ControlSource};
use crate::decode::{Decoder, SchemaResolver};
use crate::metrics::Metrics;
use crate::published::Published;
use crate::schema::{Catalog, Topic};
use crate::sink::{DeadLetter, Sink};
use crate::source::{BrokerHealth, Source};
use crate::state::State;
use crate::time::{TopicPartition, Watermarks};
use crate::violation::Violation;

/// What the pipeline has done so far; published after every tick.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Status {
    pub consumed: u64,
    /// When the first message was read.
    pub first_consumed_at: Option<Instant>,
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
    /// What late events changed, waiting to be published at the next tick.
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
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let mut messages = self.source.recv_batch(MAX_BATCH, next_tick).await;
            // recv_batch already dropped what it read from revoked partitions
            // before their revocation.
            let revoked = self.source.take_revoked();
            if !revoked.is_empty() {
                self.revoke(&revoked);
            }
            if self.source.take_assigned() {
                // The access topic is read again from the beginning.
                messages.retain(|m| m.topic != Topic::Access);
                self.reassigned();
            }
            self.ingest(messages).await?;
            if Instant::now() >= next_tick {
                self.tick().await?;
                next_tick = Instant::now() + self.config.tick;
            }
        }
        self.metrics.ready.set(0);
        Ok(())
    }

    async fn tick(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        self.source.read_access_in_full(false);
        let assigned = self.source.assignment();
        self.watermarks.assign(&assigned);
        for tp in &assigned {
            let caught_up = self.source.caught_up(*tp, self.next_offsets.get(tp).copied());
            self.watermarks.set_caught_up(*tp, caught_up, now);
        }
        let reachable = self.source.broker_reachable();
        self.metrics.ready.set(i64::from(!assigned.is_empty() && reachable));
        self.metrics.assigned_partitions.set(assigned.len() as i64);
        // Nothing assigned, nothing to decide: what state remains (the
        // access topic) is no one's to judge here.
        let watermark = if assigned.is_empty() { None } else { self.watermarks.advance(now, wall_ms()) };
        if watermark.is_none() && self.status.ticks % 50 == 49 {
            let waiting: Vec<String> = self
                .watermarks
                .waiting_on(now)
                .into_iter()
                .map(|tp| self.source.describe_progress(tp, self.next_offsets.get(&tp).copied()))
                .collect();
            tracing::info!(?waiting, "no watermark yet: waiting for these partitions to be read or caught up");
        }
        let mut violations = Vec::new();
        if self.catch_up.is_some_and(|at| now >= at) && watermark.is_some() {
            match self.published.catch_up(CATCH_UP_TIMEOUT).await {
                Ok(read) => {
                    tracing::info!(read, known = self.published.len(), "read the violations topic on");
                    self.catch_up = None;
                    self.alert_earlier();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the violations topic yet; deciding nothing until it can be read")
                }
            }
        }
        self.status.deciding = self.catch_up.is_none() && !assigned.is_empty();
        if self.catch_up.is_some() {
            // Nothing may be published (or committed past) before we know
            // what already was.
            self.report(watermark, 0);
            return Ok(());
        }
        let detected_at = wall_ms();
        for (amendment, late) in std::mem::take(&mut self.amendments) {
            if let Some(v) = self.amendment_record(amendment, &late, detected_at) {
                violations.push(v);
            }
        }
        let mut evidence_rows = Vec::new();
        let deciding = Instant::now();
        if let Some(w) = watermark {
            for evaluation in self.controls.evaluate(&self.state, w).await? {
                let control = &self.controls.controls()[evaluation.control];
                if control.meta.evidence {
                    evidence_rows.extend(evaluation.findings);
                    continue;
                }
                observe::evaluated(&self.metrics, &control.meta.id, &evaluation);
                let detected_at = wall_ms();
                for finding in evaluation.findings {
                    let violation = Violation::new(control, finding, detected_at);
                    if self.published.contains(&violation.id) {
                        self.metrics.redecided.with_label_values(&[control.meta.id.as_str()]).inc();
                        continue;
                    }
                    if violation.late {
                        self.metrics.late_triggers.with_label_values(&[control.meta.id.as_str()]).inc();
                    }
                    self.published.insert(&violation.id);
                    violations.push(violation);
                }
            }
        }
        let mut dead = std::mem::take(&mut self.dead);
        let mut seen = std::collections::HashSet::new();
        dead.retain(|d| {
            !self.published.is_dead_lettered(&d.source_topic, d.partition, d.offset)
                && seen.insert((d.source_topic.clone(), d.partition, d.offset))
        });
        let evidence = self.evidence_records(evidence_rows)?;
        let publishing = Instant::now();
        self.sink.publish(&violations, &dead, &evidence).await?;
        let publish_took = publishing.elapsed();
        self.metrics.evidence_records.inc_by(evidence.len() as u64);
        for d in &dead {
            self.published.dead_lettered(&d.source_topic, d.partition, d.offset);
            let topic = self.config.topic_of(&d.source_topic).map_or("unknown", Topic::name);
            self.metrics.dead_letters.with_label_values(&[topic, d.reason]).inc();
        }
        for v in violations.iter().filter(|v| v.status == "open") {
            self.metrics.violations.with_label_values(&[v.control_id.as_str(), v.severity.as_str()]).inc();
            self.metrics.service_violations.with_label_values(&[v.service.as_str(), v.control_id.as_str()]).inc();
            if let Some(f) = &self.on_violation {
                f(v);
            }
        }
        self.alert(&violations);
        if let Some(w) = watermark {
            let horizons = Topic::ALL.map(|t| w.saturating_sub(crate::duration::millis(self.controls.retention(t))));
            self.state.evict(horizons);
            self.controls.evict_decided(w);
        }
        if let Err(e) = self.commit() {
            // Committing again next tick is harmless; until then a restart
            // would only replay a little more.
            tracing::warn!(error = %e, "offset commit failed; retrying next tick");
        }
        tracing::debug!(
            decide = ?(publishing - deciding),
            publish = ?publish_took,
            tick = ?now.elapsed(),
            violations = violations.len(),
            "ticked"
        );
        self.report(watermark, violations.len());
        Ok(())
    }

    /// The record an amendment publishes, unless it would repeat what the
    /// violations topic already says.
    fn amendment_record(&mut self, amendment: Amendment, late: &[String], detected_at: i64) -> Option<Violation> {
        let (control, v, kind) = match amendment {
            Amendment::New { control, finding } => {
                let c = &self.controls.controls()[control];
                let v = Violation::new(c, finding, detected_at);
                if self.published.contains(&v.id) {
                    return None;
                }
                self.published.insert(&v.id);
                (c, v, "new")
            }
            Amendment::Retracted { control, finding } => {
                let c = &self.controls.controls()[control];
                let v = Violation::retraction(c, finding, detected_at, late);
                if !self.published.contains(&v.id) || self.published.is_retracted(&v.id) {
                    return None;
                }
                self.published.retract(&v.id);
                (c, v, "retracted")
            }
        };
        self.metrics.amendments.with_label_values(&[control.meta.id.as_str(), kind]).inc();
        tracing::info!(control = %control.meta.id, subject = %v.subject, kind, "amended a decision after late events");
        Some(v)
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
        self.source.commit(&offsets)?;
        Ok(())
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
