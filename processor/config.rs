//! Configuration, in two phases: [`RawConfig`] is what the TOML file says
//! (unknown keys are errors), [`Config`] is the validated form the rest of
//! Vigil uses.
//!
//! ```toml
//! [kafka]
//! bootstrap_servers = "localhost:9092"
//! group_id = "vigil"
//! [kafka.properties]          # passed through to librdkafka
//! "security.protocol" = "SASL_SSL"
//!
//! [topics]                    # names of the four inputs and two outputs
//! change = "change-events"
//!
//! [formats]                   # per input topic: avro, avro-plain, json, auto, or a tool's (github, okta, …)
//! ci = "json"
//!
//! [time]
//! allowed_lateness = "5m"
//! idle_timeout = "30s"
//!
//! [identities]                # principal = [the names it has in each tool]
//! alice = ["alice-gh", "alice@acme.example"]
//!
//! [alerts]                    # push violations to Alertmanager's v2 API
//! alertmanager_url = "http://alertmanager:9093"
//!
//! [native.okta]               # what tools' events mean: see `native::NativeConfig`
//! groups = ["prod-deployers"]
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::alerts::AlertConfig;
use crate::decode::{Format, TimeBounds};
use crate::duration;
use crate::identity::Identities;
use crate::native::NativeConfig;
use crate::schema::Topic;
use crate::time::WatermarkConfig;

/// The configuration file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub kafka: RawKafka,
    #[serde(default)]
    pub topics: RawTopics,
    /// Payload format per input topic (logical name → format).
    #[serde(default)]
    pub formats: BTreeMap<String, Format>,
    #[serde(default)]
    pub time: RawTime,
    #[serde(default)]
    pub decode: RawDecode,
    #[serde(default)]
    pub controls: RawControls,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub alerts: RawAlerts,
    /// Principal → the names it goes by in each tool.
    #[serde(default)]
    pub identities: BTreeMap<String, Vec<String>>,
    /// What tools' events mean (`[native.github]`, `[native.okta]`, …).
    #[serde(default)]
    pub native: NativeConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    /// Comma-separated host:port list.
    #[serde(default = "default_bootstrap")]
    pub bootstrap_servers: String,
    /// Consumer group shared by all Vigil instances.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Extra librdkafka properties (security, tuning), passed through as is
    /// to every client.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumers only (e.g. session.timeout.ms).
    #[serde(default)]
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the producers only (e.g. linger.ms), also
    /// used by `vigil generate --config`.
    #[serde(default)]
    pub producer_properties: BTreeMap<String, String>,
}

impl Default for RawKafka {
    fn default() -> Self {
        RawKafka {
            bootstrap_servers: default_bootstrap(),
            group_id: default_group(),
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
        }
    }
}

fn default_bootstrap() -> String {
    "localhost:9092".into()
}
fn default_group() -> String {
    "vigil".into()
}

/// Topic names. Inputs default to their logical names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTopics {
    pub change: Option<String>,
    pub ci: Option<String>,
    pub access: Option<String>,
    pub deploy: Option<String>,
    /// Where violations are published (default `vigil-violations`).
    pub violations: Option<String>,
    /// Where undecodable input goes (default `vigil-dead-letter`).
    pub dead_letter: Option<String>,
    /// Where evidence records go (default `vigil-evidence`; as many
    /// partitions as the deploy topic).
    pub evidence: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTime {
    /// How far behind the newest event of a partition its watermark stays.
    pub allowed_lateness: Option<String>,
    /// A caught-up partition silent this long stops holding the watermark.
    pub idle_timeout: Option<String>,
    /// When every partition is idle, let the watermark follow the wall clock.
    pub wall_clock_fallback: Option<bool>,
    /// How often due triggers are evaluated and offsets committed.
    pub tick: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecode {
    /// Directory with an ids.toml of extra local writer schemas.
    pub schemas_dir: Option<PathBuf>,
    /// Confluent schema registry URL for unknown schema ids.
    pub schema_registry_url: Option<String>,
    /// Events older than this (by event_time) are rejected.
    pub max_event_age: Option<String>,
    /// Events this far in the future are rejected.
    pub max_future_skew: Option<String>,
    /// Larger payloads are rejected (reason `oversize`); default 1 MiB.
    pub max_message_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControls {
    /// Directory of .sql controls; the built-in catalogue when absent.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// Alertmanager's base URL; none sends no alerts.
    pub alertmanager_url: Option<String>,
    /// How long after detection an alert stays firing (default 24h).
    pub resolve_after: Option<String>,
    /// Alerts held while Alertmanager is unreachable (default 100000).
    pub queue: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Address for /metrics; none serves nothing.
    pub addr: Option<String>,
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub bootstrap_servers: String,
    pub group_id: String,
    /// Static group membership (`vigil run --instance-id`): the group
    /// consumer's `group.instance.id`, so that a restart under the same name
    /// within the session timeout takes its partitions back with no
    /// rebalance. `None`: dynamic membership.
    pub instance_id: Option<String>,
    /// `kafka.properties` plus the producer-only ones.
    pub producer_properties: BTreeMap<String, String>,
    /// `kafka.properties` plus the consumer-only ones.
    pub consumer_properties: BTreeMap<String, String>,
    /// Kafka topic name per logical input topic.
    pub input_topics: [String; 4],
    pub formats: [Format; 4],
    pub violations_topic: String,
    pub dead_letter_topic: String,
    pub evidence_topic: String,
    pub watermarks: WatermarkConfig,
    pub tick: Duration,
    pub time_bounds: TimeBounds,
    pub max_message_bytes: usize,
    pub schemas_dir: Option<PathBuf>,
    pub schema_registry_url: Option<String>,
    pub controls_dir: Option<PathBuf>,
    pub metrics_addr: Option<SocketAddr>,
    pub alerts: Option<AlertConfig>,
    pub identities: Arc<Identities>,
    pub native: Arc<NativeConfig>,
}

impl Config {
    /// Reads and validates a config file; errors name the file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Config::validate(raw).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Turns the raw form into the validated one.
    pub fn validate(raw: RawConfig) -> Result<Config, String> {
        let dur = |key: &str, text: &Option<String>, default: &str| {
            duration::parse(text.as_deref().unwrap_or(default)).map_err(|e| format!("{key}: {e}"))
        };
        let t = &raw.topics;
        let input_topics = Topic::ALL.map(|topic| {
            let named = match topic {
                Topic::Change => &t.change,
                Topic::Ci => &t.ci,
                Topic::Access => &t.access,
                Topic::Deploy => &t.deploy,
            };
            named.clone().unwrap_or_else(|| topic.name().to_string())
        });
        for key in raw.formats.keys() {
            if Topic::from_name(key).is_none() {
                return Err(format!("formats.{key}: not an input topic; use change, ci, access or deploy"));
            }
        }
        raw.native.validate()?;
        let formats = Topic::ALL.map(|topic| raw.formats.get(topic.name()).copied().unwrap_or(Format::Auto));
        let metrics_addr = raw
            .metrics
            .addr
            .as_deref()
            .map(|a| a.parse().map_err(|e| format!("metrics.addr `{a}`: {e}; write host:port, e.g. 127.0.0.1:9464")))
            .transpose()?;
        let with_common = |only: &BTreeMap<String, String>| {
            let mut all = raw.kafka.properties.clone();
            all.extend(only.iter().map(|(k, v)| (k.clone(), v.clone())));
            all
        };
        Ok(Config {
            consumer_properties: with_common(&raw.kafka.consumer_properties),
            producer_properties: with_common(&raw.kafka.producer_properties),
            bootstrap_servers: raw.kafka.bootstrap_servers,
            group_id: raw.kafka.group_id,
            instance_id: None,
            input_topics,
            formats,
            violations_topic: t.violations.clone().unwrap_or_else(|| "vigil-violations".into()),
            dead_letter_topic: t.dead_letter.clone().unwrap_or_else(|| "vigil-dead-letter".into()),
            evidence_topic: t.evidence.clone().unwrap_or_else(|| "vigil-evidence".into()),
            watermarks: WatermarkConfig {
                allowed_lateness_ms: duration::millis(dur("time.allowed_lateness", &raw.time.allowed_lateness, "5m")?),
                idle_timeout: dur("time.idle_timeout", &raw.time.idle_timeout, "30s")?,
                wall_clock_fallback: raw.time.wall_clock_fallback.unwrap_or(true),
            },
            tick: dur("time.tick", &raw.time.tick, "1s")?,
            time_bounds: TimeBounds {
                max_age_ms: duration::millis(dur("decode.max_event_age", &raw.decode.max_event_age, "3650d")?),
                max_future_ms: duration::millis(dur("decode.max_future_skew", &raw.decode.max_future_skew, "1d")?),
            },
            max_message_bytes: raw.decode.max_message_bytes.unwrap_or(crate::decode::DEFAULT_MAX_MESSAGE_BYTES),
            schemas_dir: raw.decode.schemas_dir,
            schema_registry_url: raw.decode.schema_registry_url,
            controls_dir: raw.controls.dir,
            metrics_addr,
            alerts: match &raw.alerts.alertmanager_url {
                None => None,
                Some(url) if !url.starts_with("http://") && !url.starts_with("https://") => {
                    return Err(format!(
                        "alerts.alertmanager_url `{url}`: write the base URL, e.g. http://alertmanager:9093"
                    ))
                }
                Some(url) => Some(AlertConfig {
                    url: url.clone(),
                    resolve_after: dur("alerts.resolve_after", &raw.alerts.resolve_after, "24h")?,
                    queue: raw.alerts.queue.unwrap_or(100_000),
                }),
            },
            identities: Arc::new(Identities::new(&raw.identities)?),
            native: Arc::new(raw.native),
        })
    }

    /// The logical topic a Kafka topic name belongs to.
    pub fn topic_of(&self, kafka_topic: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| self.input_topics[t.index()] == kafka_topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors() {
        let err = toml::from_str::<RawConfig>("[time]\nlateness = \"5m\"").unwrap_err();
        assert!(err.to_string().contains("lateness"));
    }

    #[test]
    fn defaults_validate() {
        let config = Config::validate(RawConfig::default()).unwrap();
        assert_eq!(config.input_topics[Topic::Deploy.index()], "deploy");
        assert_eq!(config.watermarks.allowed_lateness_ms, 300_000);
    }

    #[test]
    fn bad_duration_names_its_key() {
        let raw: RawConfig = toml::from_str("[time]\nidle_timeout = \"soon\"").unwrap();
        assert!(Config::validate(raw).unwrap_err().contains("time.idle_timeout"));
    }
}
