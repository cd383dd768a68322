//! What the pipeline tells the outside: gauges and status each tick, the
//! late events of a batch.

use std::collections::BTreeSet;

use datafusion::arrow::record_batch::RecordBatch;

use super::{wall_ms, Pipeline};
use crate::alerts::{Alert, Earlier};
use crate::controls::Evaluation;
use crate::metrics::Metrics;
use crate::schema::Topic;
use crate::time::TopicPartition;
use crate::violation::Violation;

impl Pipeline {
    /// Publishes the gauges and status (each tick, and when a decision concludes).
    pub(super) fn report(&mut self, watermark: Option<i64>) {
        let wall = wall_ms();
        for (topic, w) in self.watermarks.per_topic() {
            self.metrics.watermark.with_label_values(&[topic.name()]).set(w as f64 / 1000.0);
            self.metrics.watermark_delay.with_label_values(&[topic.name()]).set((wall - w) as f64 / 1000.0);
        }
        self.report_lag();
        self.metrics.caught_up.set(i64::from(self.watermarks.all_caught_up()));
        for topic in Topic::ALL {
            let usage = self.state.usage(topic);
            self.metrics.state_rows.with_label_values(&[topic.name()]).set(usage.rows as i64);
            self.metrics.state_bytes.with_label_values(&[topic.name()]).set(usage.bytes as i64);
        }
        let pending = self.controls.pending_rows() + self.deciding_rows();
        self.metrics.pending_triggers.set(pending as i64);
        self.metrics.held_ids.set(self.published.len() as i64);
        if let Some(heap) = crate::alloc::live_bytes() {
            self.metrics.heap_bytes.set(heap);
        }
        self.status.pending_triggers = pending;
        self.status.watermark = watermark;
        self.status.caught_up = self.watermarks.all_caught_up();
        self.status_tx.send_replace(self.status.clone());
    }

    /// Hands published violations (and retractions) to Alertmanager.
    pub(super) fn alert(&self, violations: &[Violation]) {
        let (Some(alerts), Some(config)) = (&self.alerts, &self.config.alerts) else { return };
        let now = wall_ms();
        for v in violations {
            alerts.push(Alert::of(v, self.remediation(&v.control_id), config.resolve_after, now));
        }
    }

    /// Hands the violations read on from the topic that were published
    /// within `resolve_after` back to the alert sender, which posts those
    /// Alertmanager lacks: what a killed process had queued is not lost.
    pub(super) fn alert_earlier(&mut self) {
        let earlier = self.published.take_earlier();
        let (Some(alerts), Some(config)) = (&self.alerts, &self.config.alerts) else { return };
        let now = wall_ms();
        let mut out = Vec::with_capacity(earlier.len());
        let mut unreadable = 0usize;
        for e in earlier {
            match Violation::from_confluent_avro(&self.catalog.violation, &e.payload) {
                Ok(v) => out.push(Earlier {
                    alert: Alert::of(&v, self.remediation(&v.control_id), config.resolve_after, now),
                    retraction: e.retraction,
                }),
                Err(_) => unreadable += 1,
            }
        }
        if unreadable > 0 {
            tracing::warn!(unreadable, "records on the violations topic are not violations; no alerts for them");
        }
        alerts.resend(out);
    }

    fn remediation(&self, control_id: &str) -> &str {
        let control = self.controls.controls().iter().find(|c| c.meta.id == control_id);
        control.and_then(|c| c.meta.remediation.as_deref()).unwrap_or_default()
    }

    /// Consumer lag per partition read; partitions no longer read lose
    /// their series.
    fn report_lag(&mut self) {
        let lag = self.source.lag();
        let now: BTreeSet<TopicPartition> = lag.iter().map(|(tp, _)| *tp).collect();
        for (topic, partition) in self.lag_series.difference(&now) {
            let _ = self.metrics.consumer_lag.remove_label_values(&[topic.name(), &partition.to_string()]);
        }
        for ((topic, partition), records) in lag {
            self.metrics.consumer_lag.with_label_values(&[topic.name(), &partition.to_string()]).set(records);
        }
        self.lag_series = now;
    }
}

/// Counts one control's evaluation: its time, and its due triggers decided
/// as passing or violating.
pub(super) fn evaluated(metrics: &Metrics, control: &str, evaluation: &Evaluation) {
    metrics.evaluation_seconds.with_label_values(&[control]).observe(evaluation.elapsed.as_secs_f64());
    let violations = evaluation.findings.len().min(evaluation.due_rows);
    metrics.decisions.with_label_values(&[control, "violation"]).inc_by(violations as u64);
    metrics.decisions.with_label_values(&[control, "pass"]).inc_by((evaluation.due_rows - violations) as u64);
}

/// How many rows of `batch` are at or behind the watermark: late events.
pub(super) fn late_rows(batch: &RecordBatch, time_index: usize, watermark: i64) -> usize {
    use datafusion::arrow::array::{Array, TimestampMillisecondArray};
    let Some(times) = batch.column(time_index).as_any().downcast_ref::<TimestampMillisecondArray>() else {
        return 0;
    };
    times.iter().flatten().filter(|t| *t <= watermark).count()
}

/// `event_id@topic/partition/offset` of the rows of `batch` at or behind the
/// watermark: the late events an amendment cites.
pub(super) fn late_evidence(batch: &RecordBatch, topic: Topic, watermark: i64) -> Vec<String> {
    use datafusion::arrow::array::{Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray};
    let column = |name: &str| batch.schema().index_of(name).ok().map(|i| batch.column(i).clone());
    let (Some(ids), Some(times), Some(partitions), Some(offsets)) =
        (column("event_id"), column("event_time"), column("_partition"), column("_offset"))
    else {
        return Vec::new();
    };
    let ids = ids.as_any().downcast_ref::<StringArray>();
    let times = times.as_any().downcast_ref::<TimestampMillisecondArray>();
    let partitions = partitions.as_any().downcast_ref::<Int32Array>();
    let offsets = offsets.as_any().downcast_ref::<Int64Array>();
    let (Some(ids), Some(times), Some(partitions), Some(offsets)) = (ids, times, partitions, offsets) else {
        return Vec::new();
    };
    (0..batch.num_rows())
        .filter(|i| times.is_valid(*i) && times.value(*i) <= watermark)
        .map(|i| format!("{}@{}/{}/{}", ids.value(i), topic.name(), partitions.value(i), offsets.value(i)))
        .collect()
}
