//! What the Kafka clients report back: errors to the brokers' health (which
//! /readyz shows), statistics to the lag, rebalances to the source.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

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
    /// When each kind of refused access (authentication, TLS, ACL) was last
    /// logged: every client retries it every few seconds, and one line per
    /// kind (again after [`ACCESS_REPEAT`]) says it without a flood.
    refused: Mutex<Vec<(RDKafkaErrorCode, std::time::Instant)>>,
}

/// How often a refusal that goes on is logged again.
const ACCESS_REPEAT: std::time::Duration = std::time::Duration::from_secs(300);

impl BrokerHealth {
    /// Notes a client error; losing the brokers makes the instance not ready.
    pub fn note(&self, error: &KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let code = error.rdkafka_error_code();
        if matches!(code, Some(Code::AllBrokersDown | Code::BrokerTransportFailure)) {
            self.not_ready();
            if !self.down.swap(true, Ordering::SeqCst) {
                tracing::warn!(%error, reason, "lost the Kafka brokers; not ready until they answer again");
            }
        } else if let Some(code) = code.filter(|c| refused_access(*c)) {
            self.not_ready();
            if self.first_in_a_while(code) {
                // The reason names the broker (`sasl_ssl://host:port/id: …`) and the cause.
                tracing::error!(
                    error = %bounded(reason, 500),
                    "the Kafka brokers refuse Vigil's access; not ready, deciding and committing nothing \
                     until they accept it (check kafka.properties: security.protocol, sasl.*, ssl.ca.location, \
                     and the principal's ACLs)"
                );
            }
        } else {
            tracing::warn!(%error, reason, "kafka client error");
        }
    }

    fn not_ready(&self) {
        if let Some(ready) = self.ready.get() {
            ready.set(0);
        }
    }

    fn first_in_a_while(&self, code: RDKafkaErrorCode) -> bool {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        match refused.iter_mut().find(|(c, _)| *c == code) {
            Some((_, at)) if now.duration_since(*at) < ACCESS_REPEAT => false,
            Some((_, at)) => {
                *at = now;
                true
            }
            None => {
                refused.push((code, now));
                true
            }
        }
    }

    pub fn report_to(&self, ready: prometheus::IntGauge) {
        let _ = self.ready.set(ready);
    }
}

/// Hears about rebalances and errors. Rebalance callbacks run inside the
/// consumer's poll, on the reader thread, which hands them to the pipeline
/// in order with the messages (`reader`).
pub struct SourceContext {
    pub(super) revoked: Mutex<Vec<(String, i32)>>,
    /// Counts revocations, so a batch can tell it spans one.
    pub(super) revocations: AtomicU64,
    pub(super) assigned: AtomicBool,
    pub(super) reports: ReaderContext,
}

impl ClientContext for SourceContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        forward_log(level, fac, message);
    }

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
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        forward_log(level, fac, message);
    }

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

/// Errors that mean the brokers answer but refuse this client: retrying
/// will not cure them until someone changes a credential, a CA or an ACL.
pub fn refused_access(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as Code;
    matches!(
        code,
        Code::Authentication
            | Code::SaslAuthenticationFailed
            | Code::SSL
            | Code::TopicAuthorizationFailed
            | Code::GroupAuthorizationFailed
            | Code::ClusterAuthorizationFailed
            | Code::TransactionalIdAuthorizationFailed
            | Code::DelegationTokenAuthorizationFailed
            | Code::UnsupportedSASLMechanism
            | Code::IllegalSASLState
    )
}

/// `text` cut to at most `max` bytes, at a character boundary: what a log
/// line takes of a client's message.
pub(crate) fn bounded(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// librdkafka's log lines, as rdkafka's default forwards them, except a
/// broker connection's failure (`FAIL`): the error callback reports that
/// too, once per kind of refusal ([`BrokerHealth::note`]), and every client
/// would otherwise log each retry.
pub fn forward_log(level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel as Level;
    let message = bounded(message, 1000);
    match level {
        _ if fac == "FAIL" => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
        Level::Emerg | Level::Alert | Level::Critical | Level::Error => {
            tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}")
        }
        Level::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
        Level::Notice | Level::Info => tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}"),
        Level::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
    }
}
