//! The shipped controls' semantics, decided on hand-written fixtures without
//! a broker: boundaries of event time, the trigger filter, late triggers.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{json, Value};
use vigil::controls::{builtin_sources, ControlSet};
use vigil::decode::{Decoder, Format, RawMessage, SchemaResolver, TimeBounds};
use vigil::schema::{Catalog, Topic};
use vigil::state::State;

const T: i64 = 1_790_000_000_000; // the deploy instant in every fixture
const S: i64 = 1_000;
const M: i64 = 60 * S;

struct Harness {
    catalog: Arc<Catalog>,
    state: State,
    controls: ControlSet,
    offset: i64,
}

impl Harness {
    async fn new() -> Harness {
        let catalog = Catalog::builtin().unwrap();
        let state = State::new(Topic::ALL.map(|t| &**catalog.event(t)));
        let controls = ControlSet::plan(&builtin_sources(), &catalog, &state).await.unwrap();
        Harness { catalog, state, controls, offset: 0 }
    }

    /// Feeds one event, as JSON, with the watermark at `watermark`.
    fn feed(&mut self, topic: Topic, mut fields: Value, at: i64, watermark: Option<i64>) {
        self.offset += 1;
        fields["event_id"] = json!(format!("ev-{}", self.offset));
        fields["event_time"] = json!(at);
        let payload = serde_json::to_vec(&fields).unwrap();
        let resolver = Arc::new(SchemaResolver::new(None, None).unwrap());
        let decoder = Decoder::new(self.catalog.event(topic).clone(), resolver, Format::Json, TimeBounds::default());
        let decoded = decoder.decode([RawMessage { payload: Some(&payload), partition: 0, offset: self.offset }], T);
        assert!(decoded.rejects.is_empty(), "fixture rejected: {:?}", decoded.rejects);
        let batch = decoded.batch.unwrap();
        self.controls.admit(topic, &batch, watermark).unwrap();
        self.state.append(topic, batch);
    }

    /// (control, subject, late) of every violation due at `watermark`.
    async fn decide(&mut self, watermark: i64) -> BTreeSet<(String, String, bool)> {
        let mut out = BTreeSet::new();
        for e in self.controls.evaluate(watermark).await.unwrap() {
            let id = &self.controls.controls()[e.control].meta.id;
            for f in e.findings {
                out.insert((id.clone(), f.subject, f.late));
            }
        }
        out
    }
}

fn change(action: &str, service: &str) -> Value {
    json!({"change_id": "CHG-1", "service": service, "action": action, "actor": "cab-maria", "requester": "alice"})
}

fn deploy(status: &str, env: &str, actor: &str, automated: bool, change_id: Option<&str>) -> Value {
    json!({"deploy_id": "dep-1", "service": "payments", "environment": env, "commit_sha": "c0ffee",
        "actor": actor, "automated": automated, "change_id": change_id, "status": status})
}

fn scan(kind: &str, outcome: &str, critical: i32) -> Value {
    json!({"kind": "scan", "repo": "acme/payments", "service": "payments", "commit_sha": "c0ffee",
        "scan_type": kind, "outcome": outcome, "findings_critical": critical})
}

fn merged(author: &str) -> Value {
    json!({"kind": "pr_merged", "repo": "acme/payments", "service": "payments", "commit_sha": "c0ffee",
        "pr_number": 7, "actor": "bob", "author": author})
}

/// A deploy at T by a pipeline with good scans; `setup` adds the variation.
async fn decide_with(setup: impl FnOnce(&mut Harness)) -> BTreeSet<(String, String)> {
    let mut h = Harness::new().await;
    h.feed(Topic::Ci, scan("sast", "success", 0), T - 30 * M, None);
    h.feed(Topic::Ci, scan("sca", "success", 0), T - 29 * M, None);
    h.feed(Topic::Ci, merged("alice"), T - 60 * M, None);
    setup(&mut h);
    h.decide(T + 60 * M).await.into_iter().map(|(c, s, _)| (c, s)).collect()
}

fn only(control: &str) -> BTreeSet<(String, String)> {
    [(control.to_string(), "dep-1".to_string())].into()
}

#[tokio::test]
async fn approved_change_before_deploy_passes_every_control() {
    let out = decide_with(|h| {
        h.feed(Topic::Change, change("approved", "payments"), T - 10 * M, None);
        h.feed(Topic::Deploy, deploy("succeeded", "production", "svc-deploybot", true, Some("CHG-1")), T, None);
    })
    .await;
    assert!(out.is_empty(), "{out:?}");
}

#[tokio::test]
async fn approval_exactly_at_deploy_time_counts() {
    let out = decide_with(|h| {
        h.feed(Topic::Change, change("approved", "payments"), T, None);
        h.feed(Topic::Deploy, deploy("succeeded", "production", "svc-deploybot", true, Some("CHG-1")), T, None);
    })
    .await;
    assert!(out.is_empty(), "{out:?}");
}

#[tokio::test]
async fn approval_one_second_after_deploy_violates_cm01() {
    let out = decide_with(|h| {
        h.feed(Topic::Change, change("approved", "payments"), T + S, None);
        h.feed(Topic::Deploy, deploy("succeeded", "production", "svc-deploybot", true, Some("CHG-1")), T, None);
    })
    .await;
    assert_eq!(out, only("CM-01"));
}

#[tokio::test]
async fn rejected_after_approval_before_deploy_violates_cm01() {
    let out = decide_with(|h| {
        h.feed(Topic::Change, change("approved", "payments"), T - 10 * M, None);
        h.feed(Topic::Change, change("rejected", "payments"), T - 5 * M, None);
        h.feed(Topic::Deploy, deploy("succeeded", "production", "svc-deploybot", true, Some("CHG-1")), T, None);
    })
    .await;
    assert_eq!(out, only("CM-01"));
}

#[tokio::test]
async fn cancellation_after_the_deploy_does_not_undo_its_approval() {
    let out = decide_with(|h| {
        h.feed(Topic::Change, change("approved", "payments"), T - 10 * M, None);
        h.feed(Topic::Change, change("cancelled", "payments"), T + 5 * M, None);
        h.feed(Topic::Deploy, deploy("succeeded", "production", "svc-deploybot", true, Some("CHG-1")), T, None);
    })
    .await;
    assert!(out.is_empty(), "{out:?}");
}

#[tokio::test]
async fn change_ticket_for_another_service_violates_cm01() {
    let out = decide_with(|h| {
        h.feed(Topic::Change, change("approved", "ledger"), T - 10 * M, None);
        h.feed(Topic::Deploy, deploy("succeeded", "production", "svc-deploybot", true, Some("CHG-1")), T, None);
    })
    .await;
    assert_eq!(out, only("CM-01"));
}

#[tokio::test]
async fn deploy_naming_no_change_violates_cm01() {
    let out = decide_with(|h| {
        h.feed(Topic::Deploy, deploy("succeeded", "production", "svc-deploybot", true, None), T, None);
    })
    .await;
    assert_eq!(out, only("CM-01"));
}

#[tokio::test]
async fn staging_and_failed_deploys_are_not_triggers() {
    let out = decide_with(|h| {
        h.feed(Topic::Deploy, deploy("succeeded", "staging", "alice", false, None), T, None);
        h.feed(Topic::Deploy, deploy("failed", "production", "alice", false, None), T, None);
    })
    .await;
    assert!(out.is_empty(), "{out:?}");
}

#[tokio::test]
async fn author_deploying_own_commit_violates_sod02() {
    let out = decide_with(|h| {
        h.feed(Topic::Change, change("approved", "payments"), T - 10 * M, None);
        h.feed(Topic::Deploy, deploy("succeeded", "production", "alice", false, Some("CHG-1")), T, None);
    })
    .await;
    assert_eq!(out, only("SOD-02"));
}

#[tokio::test]
async fn another_human_or_the_pipeline_may_deploy() {
    for (actor, automated) in [("carol", false), ("alice", true)] {
        let out = decide_with(|h| {
            h.feed(Topic::Change, change("approved", "payments"), T - 10 * M, None);
            h.feed(Topic::Deploy, deploy("succeeded", "production", actor, automated, Some("CHG-1")), T, None);
        })
        .await;
        assert!(out.is_empty(), "{actor} automated={automated}: {out:?}");
    }
}

#[tokio::test]
async fn failed_scan_critical_findings_or_missing_scan_violate_sec01() {
    let variants: [(&str, Value); 3] = [
        ("failed sast", scan("sast", "failure", 0)),
        ("critical sca", scan("sca", "success", 3)),
        ("a scan after the deploy", scan("dast", "success", 0)),
    ];
    for (what, extra) in variants {
        let mut h = Harness::new().await;
        h.feed(Topic::Ci, scan("sast", "success", 0), T - 30 * M, None);
        if what != "a scan after the deploy" {
            h.feed(Topic::Ci, scan("sca", "success", 0), T - 29 * M, None);
            h.feed(Topic::Ci, extra, T - 28 * M, None);
        } else {
            h.feed(Topic::Ci, scan("sca", "success", 0), T + M, None);
        }
        h.feed(Topic::Change, change("approved", "payments"), T - 10 * M, None);
        h.feed(Topic::Deploy, deploy("succeeded", "production", "svc-deploybot", true, Some("CHG-1")), T, None);
        let out: BTreeSet<_> = h.decide(T + 60 * M).await.into_iter().map(|(c, s, _)| (c, s)).collect();
        assert_eq!(out, only("SEC-01"), "{what}");
    }
}

#[tokio::test]
async fn nothing_is_decided_before_the_watermark_passes_deploy_plus_grace() {
    let mut h = Harness::new().await;
    h.feed(Topic::Deploy, deploy("succeeded", "production", "svc-deploybot", true, None), T, Some(T - M));
    assert!(h.decide(T + 14 * M).await.is_empty(), "grace is 15 minutes");
    assert_eq!(h.controls.pending_rows(), 2, "CM-01 and SEC-01 wait; SOD-02 filters out automated deploys");
    let out = h.decide(T + 15 * M).await;
    assert!(out.contains(&("CM-01".into(), "dep-1".into(), false)), "{out:?}");
    assert_eq!(h.controls.pending_rows(), 0);
}

#[tokio::test]
async fn late_trigger_is_still_judged_and_marked_late() {
    let mut h = Harness::new().await;
    h.feed(Topic::Deploy, deploy("succeeded", "production", "svc-deploybot", true, None), T, Some(T + 20 * M));
    let out = h.decide(T + 20 * M).await;
    assert!(out.contains(&("CM-01".into(), "dep-1".into(), true)), "{out:?}");
}
