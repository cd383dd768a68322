//! Deciding behind ingest: each tick starts the controls' queries at the
//! watermark and goes back to reading; the decision is concluded —
//! violations, evidence and dead letters published, state evicted, offsets
//! committed — as soon as its queries are done, in whatever loop turn that
//! is.
//!
//! At most one decision runs at a time: a tick that finds the previous one
//! still running starts none (the next tick decides at a later watermark,
//! taking every trigger due by then). Nothing is committed while a
//! decision runs: its triggers have left the pending queues, and only its
//! conclusion, after the broker acknowledged what it published, may let the
//! committed offsets pass them.
//!
//! Late rows taken in while a decision runs need not wait for it: their
//! amendments compare each decided trigger's findings without and with
//! them over the current state, and the running decision read a snapshot
//! without them, so it publishes the "without" side and the amendment the
//! difference. Its violations are published before the amendments gathered
//! meanwhile, so a retraction never precedes what it retracts.

use std::time::Instant;

use super::{observe, wall_ms, Bounds, Pipeline, CATCH_UP_TIMEOUT};
use crate::controls::{Amendment, Evaluation, Running};
use crate::published::CatchUp;
use crate::schema::Topic;
use crate::violation::Violation;

/// The decision under way.
pub(super) struct Decision {
    watermark: i64,
    running: Running,
    started: Instant,
}

impl Pipeline {
    pub(super) async fn tick(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        self.status.ticks += 1;
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
        if watermark.is_none() && self.status.ticks % 50 == 0 {
            let waiting: Vec<String> = self
                .watermarks
                .waiting_on(now)
                .into_iter()
                .map(|tp| self.source.describe_progress(tp, self.next_offsets.get(&tp).copied()))
                .collect();
            tracing::info!(?waiting, "no watermark yet: waiting for these partitions to be read or caught up");
        }
        if self.catch_up.is_some_and(|at| now >= at) && watermark.is_some() {
            match self.published.catch_up(CATCH_UP_TIMEOUT).await {
                Ok(CatchUp { read, done: true }) => {
                    tracing::info!(read, known = self.published.len(), "read the output topics on");
                    self.catch_up = None;
                    self.alert_earlier();
                }
                Ok(CatchUp { read, done: false }) => {
                    // What was read stands; the next tick reads on from it.
                    tracing::info!(
                        read,
                        known = self.published.len(),
                        "reading the output topics on; deciding nothing until they are read"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the violations topic yet; deciding nothing until it can be read")
                }
            }
        }
        self.status.deciding = self.catch_up.is_none() && !assigned.is_empty();
        // Nothing may be published (or committed past) before we know what
        // already was; a decision still running is concluded when done.
        if self.catch_up.is_none() && self.decision.is_none() {
            self.conclude(None).await?;
            if let Some(watermark) = watermark {
                let running = self.controls.start(&self.state, watermark).await?;
                self.decision = Some(Decision { watermark, running, started: Instant::now() });
            }
        }
        self.report(watermark);
        Ok(())
    }

    /// Concludes the decision under way once its queries are done.
    pub(super) async fn conclude_if_done(&mut self) -> anyhow::Result<()> {
        if self.decision.as_ref().is_some_and(|d| d.running.is_done()) {
            let decision = self.decision.take();
            self.conclude(decision).await?;
            self.report(self.status.watermark);
        }
        Ok(())
    }

    /// Waits for the decision under way, if any, and concludes it (before a
    /// change of assignment, and at shutdown).
    pub(super) async fn settle(&mut self) -> anyhow::Result<()> {
        if let Some(decision) = self.decision.take() {
            self.conclude(Some(decision)).await?;
            self.report(self.status.watermark);
        }
        Ok(())
    }

    /// Publishes what `decision` found (waiting for its queries), then the
    /// amendments and dead letters gathered since the last conclusion;
    /// evicts what no later decision needs and commits.
    async fn conclude(&mut self, decision: Option<Decision>) -> anyhow::Result<()> {
        // Everything this conclusion publishes was triggered below the
        // offsets read so far: each record carries that bound (see
        // `published`).
        let bounds = self.trigger_bounds();
        let mut violations = Vec::new();
        let mut violation_bounds = Vec::new();
        let mut evidence_rows = Vec::new();
        let mut watermark = None;
        let mut decide_took = None;
        if let Some(decision) = decision {
            let evaluations = self.controls.finish(decision.running).await?;
            decide_took = Some(decision.started.elapsed());
            watermark = Some(decision.watermark);
            for (v, trigger) in self.take_evaluations(evaluations, &bounds, &mut evidence_rows) {
                violations.push(v);
                violation_bounds.push(bounds[trigger.index()].clone());
            }
        }
        let detected_at = wall_ms();
        for (amendment, late) in std::mem::take(&mut self.amendments) {
            if let Some((v, trigger)) = self.amendment_record(amendment, &late, detected_at, &bounds) {
                violations.push(v);
                violation_bounds.push(bounds[trigger.index()].clone());
            }
        }
        let mut dead = std::mem::take(&mut self.dead);
        let mut seen = std::collections::HashSet::new();
        dead.retain(|d| {
            !self.published.is_dead_lettered(&d.source_topic, d.partition, d.offset)
                && seen.insert((d.source_topic.clone(), d.partition, d.offset))
        });
        let evidence_bound = bounds[self.evidence_trigger().index()].clone();
        let evidence = self.evidence_records(evidence_rows, evidence_bound.as_ref())?;
        let publishing = Instant::now();
        self.sink.publish(&violations, &violation_bounds, &dead, &evidence, evidence_bound.as_deref()).await?;
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
        self.status.violations += violations.len() as u64;
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
        // An id whose trigger is kept for amendments stays: a late event
        // may still retract it.
        let kept = self
            .controls
            .decided_low_water_offsets()
            .into_iter()
            .map(|((t, p), o)| ((self.config.input_topics[t.index()].clone(), p), o))
            .collect();
        let forgotten = self.published.forget_decided(&kept);
        if forgotten > 0 {
            tracing::debug!(forgotten, held = self.published.len(), "forgot ids no replay can decide again");
        }
        tracing::debug!(decide = ?decide_took, publish = ?publish_took, violations = violations.len(), "concluded");
        Ok(())
    }

    /// Violations (new ones only, with their controls' trigger topics) of a
    /// decision's evaluations; their evidence rows into `evidence_rows`.
    fn take_evaluations(
        &mut self,
        evaluations: Vec<Evaluation>,
        bounds: &Bounds,
        evidence_rows: &mut Vec<crate::controls::Finding>,
    ) -> Vec<(Violation, Topic)> {
        let mut violations = Vec::new();
        for evaluation in evaluations {
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
                self.published.insert(&violation.id, bounds[control.meta.trigger.index()].as_ref());
                violations.push((violation, control.meta.trigger));
            }
        }
        violations
    }

    /// Trigger rows a running decision judges.
    pub(super) fn deciding_rows(&self) -> usize {
        self.decision.as_ref().map_or(0, |d| d.running.rows())
    }

    /// The record an amendment publishes, unless it would repeat what the
    /// violations topic already says.
    fn amendment_record(
        &mut self,
        amendment: Amendment,
        late: &[String],
        detected_at: i64,
        bounds: &Bounds,
    ) -> Option<(Violation, Topic)> {
        let (control, v, kind) = match amendment {
            Amendment::New { control, finding } => {
                let c = &self.controls.controls()[control];
                let v = Violation::new(c, finding, detected_at);
                if self.published.contains(&v.id) {
                    return None;
                }
                self.published.insert(&v.id, bounds[c.meta.trigger.index()].as_ref());
                (c, v, "new")
            }
            Amendment::Retracted { control, finding } => {
                let c = &self.controls.controls()[control];
                let v = Violation::retraction(c, finding, detected_at, late);
                if !self.published.contains(&v.id) || self.published.is_retracted(&v.id) {
                    return None;
                }
                self.published.retract(&v.id);
                self.published.insert(&v.id, bounds[c.meta.trigger.index()].as_ref());
                (c, v, "retracted")
            }
        };
        self.metrics.amendments.with_label_values(&[control.meta.id.as_str(), kind]).inc();
        tracing::info!(control = %control.meta.id, subject = %v.subject, kind, "amended a decision after late events");
        Some((v, control.meta.trigger))
    }
}
