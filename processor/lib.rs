//! Vigil: a streaming SOX-compliance processor.
//!
//! Vigil consumes four Kafka topics (change, ci, access, deploy), decodes
//! their events into Arrow record batches, keeps a bounded event-time state
//! per topic, and runs SQL controls (DataFusion) over the triggers whose
//! decision time the watermark has passed. Violations and dead letters go
//! back to Kafka; metrics are served for Prometheus.
//!
//! # Layout
//!
//! - [`config`]: the TOML configuration, parsed raw then validated.
//! - [`schema`]: the canonical events (Avro schemas in `schemas/`) and their
//!   Arrow form.
//! - [`decode`]: bytes (Confluent Avro, plain Avro, JSON) to Arrow batches;
//!   bad records become [`decode::Reject`]s with a reason.
//! - [`time`]: per-partition watermarks, idleness and the wall-clock
//!   fallback.
//! - [`state`]: retained events per topic, evicted past the retention
//!   horizon.
//! - [`controls`]: SQL control files, their metadata, planning and
//!   evaluation of due triggers. The only module that touches DataFusion.
//! - [`violation`]: the violation record, its deterministic id and encoding.
//! - [`source`] / [`sink`]: Kafka in and out. The only modules that touch
//!   rdkafka.
//! - [`pipeline`]: the loop that ties source, decode, state, controls and
//!   sink together and decides when offsets may be committed.
//! - [`metrics`]: the Prometheus registry and the HTTP endpoint.
//! - [`generate`]: a synthetic organisation's event stream with its ground
//!   truth.
//! - [`demo`]: an embedded broker, the generator and the pipeline in one
//!   process.
//! - [`cli`]: the command-line interface.
//! - [`apache_kafka`]: Apache Kafka started from its jars, for the
//!   broker-level tests, the drills and the benchmarks.

pub mod alerts;
pub mod alloc;
pub mod apache_kafka;
pub mod archive;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod config;
pub mod controls;
pub mod decode;
pub mod demo;
pub mod duration;
pub mod embedded;
pub mod engine;
pub mod evidence;
pub mod generate;
pub mod identity;
pub mod index;
pub mod lag;
pub mod metrics;
pub mod native;
pub mod pipeline;
pub mod published;
pub mod replay;
pub mod report;
pub mod report_html;
pub mod schema;
pub mod sink;
pub mod source;
pub mod state;
pub mod testing;
pub mod time;
pub mod verify;
pub mod violation;

/// The cores this process may run on (asked once; 1 when unknown): how many
/// control queries run side by side, and whether a decode call splits.
pub fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
