//! What the Kafka clients report back: errors to the brokers' health (which
//! /readyz shows), statistics to the lag, rebalances to the source.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;

use crate::lag::Lag;

/// Whether the brokers answer, shared by every Kafka client of the pipeline.
/// Any client's error callback may report them lost — the producer's runs on
/// librdkafka's own thread, so even a tick blocked on acknowledgements drops
/// readiness at once; a successful probe ([`Source::broker_reachable`]) clears it.
#[derive(Default)]
pub struct BrokerHealth {
    pub(super) down: AtomicBool,
    /// The gauge /readyz reads.
    ready: std::sync::OnceLock<prometheus::IntGauge>,
}

impl BrokerHealth {
    /// Notes a client error; losing the brokers makes the instance not ready.
    pub fn note(&self, error: &KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let code = match error {
            KafkaError::Global(c) | KafkaError::MessageConsumption(c) => Some(*c),
            _ => None,
        };
        if matches!(code, Some(Code::AllBrokersDown | Code::BrokerTransportFailure)) {
            if let Some(ready) = self.ready.get() {
                ready.set(0);
            }
            if !self.down.swap(true, Ordering::SeqCst) {
                tracing::warn!(%error, reason, "lost the Kafka brokers; not ready until they answer again");
            }
        } else {
            tracing::warn!(%error, reason, "kafka client error");
        }
    }

    pub fn report_to(&self, ready: prometheus::IntGauge) {
        let _ = self.ready.set(ready);
    }
}

/// Hears about rebalances and errors. Rebalance callbacks run inside the
/// consumer's poll, that is inside [`Source::recv_batch`], never while the
/// pipeline is in a tick.
pub struct SourceContext {
    pub(super) revoked: Mutex<Vec<(String, i32)>>,
    /// Counts revocations, so a batch can tell it spans one.
    pub(super) revocations: AtomicU64,
    pub(super) assigned: AtomicBool,
    pub(super) reports: ReaderContext,
}

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.reports.error(error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.reports.stats(statistics);
    }
}

/// What both consumers report: errors to the broker health, statistics to
/// the lag. It is the access reader's whole context.
pub struct ReaderContext {
    pub(super) health: Arc<BrokerHealth>,
    pub(super) lag: Arc<Lag>,
}

impl ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.health.note(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.lag.record(&statistics);
    }
}

impl ConsumerContext for ReaderContext {}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
            revoked.extend(list.elements().iter().map(|e| (e.topic().to_string(), e.partition())));
            self.revocations.fetch_add(1, Ordering::SeqCst);
            tracing::info!(partitions = list.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            if list.count() > 0 {
                self.assigned.store(true, Ordering::SeqCst);
                tracing::info!(partitions = list.count(), "partitions assigned");
            }
        }
    }
}
