//! Prometheus metrics and the HTTP endpoint that serves them.
//!
//! Labels are bounded: topic (logical name), reason, control, severity.
//! Never user, deploy or commit ids.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric Vigil exports.
pub struct Metrics {
    pub registry: Registry,
    pub events_consumed: IntCounterVec,
    pub events_rejected: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub violations: IntCounterVec,
    pub late_triggers: IntCounterVec,
    pub redecided: IntCounterVec,
    pub amendments: IntCounterVec,
    pub events_ignored: IntCounterVec,
    pub watermark: GaugeVec,
    pub watermark_delay: GaugeVec,
    pub late_events: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub decisions: IntCounterVec,
    pub evidence_records: IntCounter,
    pub service_violations: IntCounterVec,
    pub alerts_sent: IntCounter,
    pub alerts_resent: IntCounter,
    pub alerts_dropped: IntCounter,
    pub alert_send_failures: IntCounter,
    pub alerts_queued: IntGauge,
    pub evaluation_seconds: HistogramVec,
    pub state_rows: IntGaugeVec,
    pub state_bytes: IntGaugeVec,
    pub pending_triggers: IntGauge,
    pub ready: IntGauge,
    pub caught_up: IntGauge,
    pub assigned_partitions: IntGauge,
    pub heap_bytes: IntGauge,
    pub held_ids: IntGauge,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let plain_counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let plain_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        // process_cpu_seconds_total, process_resident_memory_bytes, open fds, …
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("unique metric");
        let build = IntGaugeVec::new(Opts::new("vigil_build_info", "Vigil's version; always 1."), &["version"])
            .expect("valid metric");
        registry.register(Box::new(build.clone())).expect("unique metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let watermark = GaugeVec::new(
            Opts::new("vigil_watermark_seconds", "Lowest partition watermark of the topic, Unix seconds."),
            &["topic"],
        )
        .expect("valid metric");
        registry.register(Box::new(watermark.clone())).expect("unique metric");
        let evaluation_seconds = HistogramVec::new(
            HistogramOpts::new(
                "vigil_evaluation_duration_seconds",
                "Time to evaluate one control over its due triggers.",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["control"],
        )
        .expect("valid metric");
        registry.register(Box::new(evaluation_seconds.clone())).expect("unique metric");
        let pending = IntGauge::new("vigil_pending_triggers", "Trigger rows waiting for their decision time.")
            .expect("valid metric");
        registry.register(Box::new(pending.clone())).expect("unique metric");
        let ready = IntGauge::new("vigil_ready", "1 when partitions are assigned and the pipeline is running.")
            .expect("valid metric");
        registry.register(Box::new(ready.clone())).expect("unique metric");
        let assigned_partitions = IntGauge::new(
            "vigil_assigned_partitions",
            "Input partitions this instance reads: its share of the group's, plus every access partition.",
        )
        .expect("valid metric");
        registry.register(Box::new(assigned_partitions.clone())).expect("unique metric");
        Arc::new(Metrics {
            events_consumed: counter("vigil_events_consumed_total", "Input records read, by topic.", &["topic"]),
            events_rejected: counter(
                "vigil_events_rejected_total",
                "Input records that could not be decoded, by topic and reason.",
                &["topic", "reason"],
            ),
            dead_letters: counter(
                "vigil_dead_letters_total",
                "Records acknowledged on the dead-letter topic, by source topic and reason.",
                &["topic", "reason"],
            ),
            violations: counter(
                "vigil_violations_total",
                "Violations published, by control and severity.",
                &["control", "severity"],
            ),
            late_triggers: counter(
                "vigil_late_triggers_total",
                "Triggers judged after the watermark had passed their decision time.",
                &["control"],
            ),
            events_ignored: counter(
                "vigil_events_ignored_total",
                "Tool-native records that are valid but carry nothing Vigil uses (a pull request opened), by topic.",
                &["topic"],
            ),
            amendments: counter(
                "vigil_amendments_total",
                "Decisions changed by late events: kind new (a late violation) or retracted.",
                &["control", "kind"],
            ),
            redecided: counter(
                "vigil_redecided_violations_total",
                "Violations decided again after a restart or rebalance and not published again: their id was already on the violations topic.",
                &["control"],
            ),
            watermark_delay: gauge(
                "vigil_watermark_delay_seconds",
                "How far the topic's watermark trails the wall clock.",
                &["topic"],
            ),
            late_events: counter(
                "vigil_late_events_total",
                "Events that arrived at or behind the watermark, by topic.",
                &["topic"],
            ),
            consumer_lag: int_gauge(
                "vigil_consumer_lag_records",
                "Records between the broker's high watermark and the next record Vigil reads, by partition.",
                &["topic", "partition"],
            ),
            decisions: counter(
                "vigil_decisions_total",
                "Due triggers decided, by control and outcome (pass or violation).",
                &["control", "outcome"],
            ),
            service_violations: counter(
                "vigil_service_violations_total",
                "Violations published, by service and control (series appear with a service's first violation).",
                &["service", "control"],
            ),
            caught_up: plain_gauge(
                "vigil_caught_up",
                "1 when every partition read has been read to its end (decisions are current).",
            ),
            evidence_records: plain_counter(
                "vigil_evidence_records_total",
                "Evidence records published (one per finished production deploy).",
            ),
            alerts_sent: plain_counter("vigil_alerts_sent_total", "Alerts Alertmanager accepted."),
            alerts_resent: plain_counter(
                "vigil_alerts_resent_total",
                "Alerts of violations published before a restart that Alertmanager did not hold, sent again.",
            ),
            alerts_dropped: plain_counter(
                "vigil_alerts_dropped_total",
                "Alerts dropped because the queue to Alertmanager was full.",
            ),
            alert_send_failures: plain_counter(
                "vigil_alert_send_failures_total",
                "Failed posts to Alertmanager (each is retried with backoff).",
            ),
            alerts_queued: plain_gauge("vigil_alerts_queued", "Alerts waiting to be posted to Alertmanager."),
            heap_bytes: plain_gauge("vigil_heap_bytes", "Bytes allocated on the heap and not yet freed."),
            held_ids: plain_gauge(
                "vigil_published_ids_held",
                "Violation and evidence ids held so as not to publish one twice, until no replay can decide it again.",
            ),
            watermark,
            evaluation_seconds,
            state_rows: int_gauge("vigil_state_rows", "Events retained in state, by topic.", &["topic"]),
            state_bytes: int_gauge("vigil_state_bytes", "Memory held by retained events, by topic.", &["topic"]),
            pending_triggers: pending,
            ready,
            assigned_partitions,
            registry,
        })
    }

    /// Starts every per-topic and per-control series at zero, so rates and
    /// alert rules see a series from the start rather than none.
    pub fn init_series(&self, controls: &[(&str, &str)]) {
        for topic in crate::schema::Topic::ALL {
            let t = [topic.name()];
            for counter in [&self.events_consumed, &self.events_ignored, &self.late_events] {
                counter.with_label_values(&t);
            }
        }
        for (control, severity) in controls {
            self.violations.with_label_values(&[control, severity]);
            self.late_triggers.with_label_values(&[control]);
            self.redecided.with_label_values(&[control]);
            for outcome in ["pass", "violation"] {
                self.decisions.with_label_values(&[control, outcome]);
            }
            for kind in ["new", "retracted"] {
                self.amendments.with_label_values(&[control, kind]);
            }
        }
    }

    /// The name of every metric family Vigil exports, whether or not it has
    /// a sample yet (process_* families come from the process collector).
    pub fn names(&self) -> Vec<String> {
        use prometheus::core::Collector;
        let collectors: [&dyn Collector; 29] = [
            &self.heap_bytes,
            &self.held_ids,
            &self.evidence_records,
            &self.caught_up,
            &self.decisions,
            &self.service_violations,
            &self.alerts_sent,
            &self.alerts_resent,
            &self.alerts_dropped,
            &self.alert_send_failures,
            &self.alerts_queued,
            &self.events_consumed,
            &self.events_rejected,
            &self.dead_letters,
            &self.violations,
            &self.late_triggers,
            &self.redecided,
            &self.amendments,
            &self.events_ignored,
            &self.watermark,
            &self.watermark_delay,
            &self.late_events,
            &self.consumer_lag,
            &self.evaluation_seconds,
            &self.state_rows,
            &self.state_bytes,
            &self.pending_triggers,
            &self.ready,
            &self.assigned_partitions,
        ];
        let mut names: Vec<String> = collectors.iter().flat_map(|c| c.desc()).map(|d| d.fq_name.clone()).collect();
        names.extend(self.registry.gather().iter().map(|f| f.name().to_string()));
        names.sort();
        names.dedup();
        names
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Serves /metrics, /healthz and /readyz on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let m = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let m = metrics.clone();
                async move {
                    // Ready: partitions assigned and every broker client
                    // connected. Caught up or not is told, not required: a
                    // replaying instance is working, not broken.
                    let details = format!(
                        "caught_up: {}\nassigned_partitions: {}\n",
                        if m.caught_up.get() == 1 { "yes" } else { "no" },
                        m.assigned_partitions.get()
                    );
                    if m.ready.get() == 1 {
                        (StatusCode::OK, format!("ready\n{details}")).into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{details}")).into_response()
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

/// The sum of every sample of `name` in a Prometheus text exposition: what
/// the tests read back from /metrics.
pub fn sample_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
