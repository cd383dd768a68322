//! Violations pushed to Alertmanager's v2 API, for routing to on-call.
//!
//! The pipeline hands each published violation to [`Alerts::push`], which
//! never blocks: a bounded queue feeds one sender thread that posts batches
//! to `POST /api/v2/alerts` and retries with exponential backoff (100 ms up
//! to 30 s) until Alertmanager takes them. An alert is lost only if the
//! queue is full (`vigil_alerts_dropped_total`, and an error log naming the
//! violation); the violation itself is always on the violations topic.
//!
//! Alerts queued when the process dies are not lost either: reading the
//! violations topic on (at start-up, after a rebalance) hands every
//! violation published within the last `resolve_after` to [`Alerts::resend`],
//! and the sender asks Alertmanager which `VigilViolation` alerts it holds
//! and posts the missing ones (`vigil_alerts_resent_total`) — and the
//! retractions of alerts it still holds. Alertmanager merges repeats by
//! labels, so one posted twice is still one alert.
//!
//! One violation is one alert: labels alertname=VigilViolation, control_id,
//! severity, service and violation_id (so two violations never merge);
//! annotations summary, description, remediation, evidence; startsAt the
//! violation's event time; endsAt `resolve_after` past detection (a
//! violation is a fact, not a state that clears) — or now, for a retraction.

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::metrics::Metrics;
use crate::violation::Violation;

/// Where and how alerts are sent (`[alerts]` in the config).
#[derive(Clone, Debug)]
pub struct AlertConfig {
    /// Alertmanager's base URL, e.g. `http://alertmanager:9093`.
    pub url: String,
    /// How long after detection an alert stays firing.
    pub resolve_after: Duration,
    /// Alerts held while Alertmanager is unreachable.
    pub queue: usize,
}

/// One alert in Alertmanager's v2 `postableAlert` form.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
}

impl Alert {
    /// The alert for `v`; `remediation` is its control's.
    pub fn of(v: &Violation, remediation: &str, resolve_after: Duration, now_ms: i64) -> Alert {
        let labels = [
            ("alertname", "VigilViolation"),
            ("control_id", v.control_id.as_str()),
            ("severity", v.severity.as_str()),
            ("service", v.service.as_str()),
            ("violation_id", v.id.as_str()),
        ];
        let annotations = [
            ("summary", format!("{}: {}", v.control_id, v.title)),
            ("description", v.message.clone()),
            ("remediation", remediation.to_string()),
            ("evidence", v.evidence.join(" ")),
            ("subject", v.subject.clone()),
        ];
        let ends = if v.status == "retracted" { now_ms } else { v.detected_at + resolve_after.as_millis() as i64 };
        Alert {
            labels: labels.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            annotations: annotations.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            starts_at: crate::decode::format_ms(v.event_time),
            ends_at: crate::decode::format_ms(ends.max(v.event_time)),
        }
    }
}

/// What the sender thread is handed.
enum Job {
    Post(Alert),
    /// Alerts of violations published earlier (the last record per
    /// violation id, in topic order): post what Alertmanager lacks.
    Resend(Vec<Earlier>),
}

/// The alert of a violation published before, and whether that record was
/// its retraction.
pub struct Earlier {
    pub alert: Alert,
    pub retraction: bool,
}

/// The handle the pipeline pushes alerts into.
pub struct Alerts {
    tx: SyncSender<Job>,
    metrics: Arc<Metrics>,
}

/// Most alerts in one POST.
const BATCH: usize = 500;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Alerts {
    /// Starts the sender thread.
    pub fn start(config: &AlertConfig, metrics: Arc<Metrics>) -> Alerts {
        let (tx, rx) = sync_channel(config.queue.max(1));
        let url = format!("{}/api/v2/alerts", config.url.trim_end_matches('/'));
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("vigil-alerts".into())
            .spawn(move || send_loop(&rx, &url, &m))
            .expect("spawning a thread");
        Alerts { tx, metrics }
    }

    /// Queues `alert` without waiting; a full queue drops it, loudly.
    pub fn push(&self, alert: Alert) {
        match self.tx.try_send(Job::Post(alert)) {
            Ok(()) => self.metrics.alerts_queued.inc(),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                self.metrics.alerts_dropped.inc();
                let Job::Post(a) = job else { return };
                let id = a.labels.get("violation_id").cloned().unwrap_or_default();
                tracing::error!(violation_id = %id, "alert queue full: alert dropped (the violation is on the violations topic)");
            }
        }
    }

    /// Hands over alerts of violations published before (the last record
    /// per violation id): the sender posts those Alertmanager does not hold,
    /// and retractions of those it does. Waits for room in the queue, as the
    /// alerts are already on the violations topic and nothing is urgent.
    pub fn resend(&self, alerts: Vec<Earlier>) {
        if !alerts.is_empty() {
            let _ = self.tx.send(Job::Resend(alerts));
        }
    }
}

/// Posts what arrives, in batches, retrying each batch until it is taken.
fn send_loop(rx: &Receiver<Job>, url: &str, metrics: &Metrics) {
    while let Ok(first) = rx.recv() {
        let mut batch = match first {
            Job::Post(alert) => vec![alert],
            Job::Resend(alerts) => {
                resend(alerts, url, metrics);
                continue;
            }
        };
        let mut resends = Vec::new();
        while batch.len() < BATCH {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(Job::Post(a)) => batch.push(a),
                Ok(Job::Resend(alerts)) => resends.push(alerts),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        post(&batch, url, metrics);
        metrics.alerts_sent.inc_by(batch.len() as u64);
        metrics.alerts_queued.sub(batch.len() as i64);
        for alerts in resends {
            resend(alerts, url, metrics);
        }
    }
}

/// Posts `batch`, retrying with backoff until Alertmanager takes it.
fn post(batch: &[Alert], url: &str, metrics: &Metrics) {
    let body = serde_json::to_string(batch).expect("alerts serialise");
    retrying(url, metrics, batch.len(), || {
        ureq::post(url)
            .header("Content-Type", "application/json")
            .config()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .send(&body)
            .map(drop)
    });
}

/// Runs `call` until it succeeds, backing off (100 ms doubling to 30 s)
/// and counting each failure.
fn retrying<T>(url: &str, metrics: &Metrics, alerts: usize, mut call: impl FnMut() -> Result<T, ureq::Error>) -> T {
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1u32;
    loop {
        match call() {
            Ok(value) => return value,
            Err(e) => {
                metrics.alert_send_failures.inc();
                tracing::warn!(%url, attempt, alerts, error = %e, retry_in = ?backoff, "cannot reach Alertmanager; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
        }
    }
}

/// Posts the alerts of `earlier` that Alertmanager lacks: a violation it
/// does not hold, a retraction of one it does.
fn resend(earlier: Vec<Earlier>, url: &str, metrics: &Metrics) {
    let held = retrying(url, metrics, earlier.len(), || {
        let mut response = ureq::get(url)
            .query("filter", "alertname=\"VigilViolation\"")
            .config()
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .call()?;
        response.body_mut().with_config().limit(1 << 30).read_json::<Vec<HeldAlert>>()
    });
    let held: std::collections::HashSet<String> =
        held.into_iter().filter_map(|mut a| a.labels.remove("violation_id")).collect();
    let missing: Vec<Alert> = earlier
        .into_iter()
        .filter(|e| {
            let is_held = e.alert.labels.get("violation_id").is_some_and(|id| held.contains(id));
            is_held == e.retraction
        })
        .map(|e| e.alert)
        .collect();
    if missing.is_empty() {
        return;
    }
    tracing::info!(
        alerts = missing.len(),
        "sending again the alerts Alertmanager lacks of violations published before"
    );
    for batch in missing.chunks(BATCH) {
        post(batch, url, metrics);
        metrics.alerts_resent.inc_by(batch.len() as u64);
    }
}

/// The part of an alert Alertmanager's `GET /api/v2/alerts` returns that
/// tells which violation it is.
#[derive(serde::Deserialize)]
struct HeldAlert {
    labels: BTreeMap<String, String>,
}
