//! `vigil check --connect`: whether the brokers of a config accept Vigil —
//! they answer, authenticate it, and let it see its topics and use its
//! group — said the way `vigil run` would meet it, before a deployment.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::context::{bounded, refused_access};
use crate::config::Config;

/// What the clients' error callback heard, each reason once.
#[derive(Default)]
struct Heard(Mutex<Vec<String>>);

impl ClientContext for Heard {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::source::forward_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let mut heard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let refused = error.rdkafka_error_code().is_some_and(refused_access);
        let line = bounded(reason, 500).to_string();
        if heard.len() < 20 && !heard.contains(&line) && (refused || heard.is_empty()) {
            heard.push(line);
        }
    }
}

impl ConsumerContext for Heard {}

/// Every problem found, each naming the broker, topic or group it concerns
/// and its cause; empty when Vigil may run.
pub fn check_connection(config: &Config, timeout: Duration) -> Vec<String> {
    let mut client = ClientConfig::new();
    for (k, v) in &config.consumer_properties {
        client.set(k, v);
    }
    client.set("bootstrap.servers", &config.bootstrap_servers).set("group.id", &config.group_id);
    let consumer: BaseConsumer<Heard> = match client.create_with_context(Heard::default()) {
        Ok(c) => c,
        Err(e) => return vec![format!("cannot make a Kafka client of [kafka] and [kafka.properties]: {e}")],
    };
    let heard = |consumer: &BaseConsumer<Heard>| consumer.context().0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Err(e) = consumer.fetch_metadata(None, timeout) {
        // Errors reach the context when the client is polled.
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while heard(&consumer).is_empty() && std::time::Instant::now() < until {
            let _ = consumer.poll(Duration::from_millis(100));
        }
        let mut out = heard(&consumer);
        if out.is_empty() {
            out.push(format!("no answer from {} within {timeout:?}: {e}", config.bootstrap_servers));
        }
        return out;
    }
    let mut problems = Vec::new();
    let mut inputs = TopicPartitionList::new();
    let outputs = [&config.violations_topic, &config.evidence_topic, &config.dead_letter_topic];
    for (name, input) in config.input_topics.iter().map(|t| (t, true)).chain(outputs.into_iter().map(|t| (t, false))) {
        match consumer.fetch_metadata(Some(name), timeout) {
            Ok(m) => match m.topics().first() {
                Some(t) if t.error().is_some() => {
                    let code = t.error().map(rdkafka::types::RDKafkaErrorCode::from);
                    let needs = if input { "Read" } else { "Read and Write" };
                    problems.push(format!(
                        "topic {name}: {} (Vigil's principal needs Describe and {needs} on it; see its ACLs)",
                        code.map_or_else(String::new, |c| c.to_string())
                    ));
                }
                Some(t) if t.partitions().is_empty() => problems.push(format!("topic {name} does not exist")),
                Some(t) if input => {
                    for p in t.partitions() {
                        let _ = inputs.add_partition_offset(name, p.id(), Offset::Invalid);
                    }
                }
                _ => {}
            },
            Err(e) => problems.push(format!("topic {name}: {e}")),
        }
    }
    if inputs.count() > 0 {
        if let Err(e) = consumer.committed_offsets(inputs, timeout) {
            problems.push(format!("group {}: {e} (Vigil's principal needs Read on its groups)", config.group_id));
        }
    }
    problems
}
