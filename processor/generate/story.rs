//! One production deploy and everything that leads up to it.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value as Json};

use super::{hex_id, Event, Org, Truth};
use crate::schema::Topic;

/// Events a compliant story writes (a bent one may write fewer or more).
pub(super) const EVENTS_PER_STORY: usize = 12;
/// From a story's first event to its last.
pub(super) const STORY_SPAN_MS: i64 = 2 * HOUR;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

/// How a story breaks CM-01.
#[derive(Clone, Copy, Debug)]
enum ChangeFault {
    NoChangeRequest,
    NeverApproved,
    ApprovedAfterDeploy,
    RejectedAfterApproval,
    OtherService,
}

/// How a story breaks SEC-01.
#[derive(Clone, Copy, Debug)]
enum ScanFault {
    SastFailed,
    CriticalFindings,
    NoSca,
    NoSast,
}

pub(super) struct Story {
    n: u64,
    t0: i64,
    service: &'static str,
    other_service: &'static str,
    author: String,
    reviewer: String,
    approver: String,
    deployer: String,
    automated: bool,
    sha: String,
    digest: String,
    change: Option<ChangeFault>,
    scan: Option<ScanFault>,
    self_deploy: bool,
    /// A deploy that fails: no trigger, so nothing may fire.
    fails: bool,
    events: Vec<Event>,
}

impl Story {
    pub(super) fn draw(org: &Org, rng: &mut ChaCha8Rng, n: u64, t0: i64, rate: f64) -> Story {
        let pick = |rng: &mut ChaCha8Rng, v: &[String]| v[rng.random_range(0..v.len())].clone();
        let service = org.services[rng.random_range(0..org.services.len())];
        let other_service = org.services.iter().copied().find(|s| *s != service).unwrap_or(service);
        let author = pick(rng, &org.engineers);
        let reviewer = loop {
            let r = pick(rng, &org.engineers);
            if r != author {
                break r;
            }
        };
        let fails = rng.random_bool(0.04);
        let change = (!fails && rng.random_bool(rate)).then(|| match rng.random_range(0..5) {
            0 => ChangeFault::NoChangeRequest,
            1 => ChangeFault::NeverApproved,
            2 => ChangeFault::ApprovedAfterDeploy,
            3 => ChangeFault::RejectedAfterApproval,
            _ => ChangeFault::OtherService,
        });
        let scan = (!fails && rng.random_bool(rate)).then(|| match rng.random_range(0..4) {
            0 => ScanFault::SastFailed,
            1 => ScanFault::CriticalFindings,
            2 => ScanFault::NoSca,
            _ => ScanFault::NoSast,
        });
        let self_deploy = !fails && rng.random_bool(rate);
        let automated = !self_deploy && rng.random_bool(0.7);
        let deployer = if self_deploy {
            author.clone()
        } else if automated {
            org.pipeline_account.to_string()
        } else {
            loop {
                let d = pick(rng, &org.engineers);
                if d != author {
                    break d;
                }
            }
        };
        let mut story = Story {
            n,
            t0,
            service,
            other_service,
            approver: pick(rng, &org.approvers),
            author,
            reviewer,
            deployer,
            automated,
            sha: hex_id(rng, 40),
            digest: format!("sha256:{}", hex_id(rng, 64)),
            change,
            scan,
            self_deploy,
            fails,
            events: Vec::new(),
        };
        story.build();
        story
    }

    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    pub(super) fn write(self, events: &mut Vec<Event>, truth: &mut Truth) {
        let deploy_id = self.deploy_id();
        if self.change.is_some() {
            truth.expect("CM-01", &deploy_id);
        }
        if self.scan.is_some() {
            truth.expect("SEC-01", &deploy_id);
        }
        if self.self_deploy {
            truth.expect("SOD-02", &deploy_id);
        }
        events.extend(self.events);
    }

    fn deploy_id(&self) -> String {
        format!("dep-{:06}", self.n)
    }

    fn push(&mut self, topic: Topic, dt: i64, fields: Json) {
        let time_ms = self.t0 + dt;
        let Json::Object(mut fields) = fields else { return };
        let seq = self.events.len();
        fields.insert("event_id".into(), json!(format!("{}-{:06}-{seq:02}", topic.name(), self.n)));
        fields.insert("event_time".into(), json!(time_ms));
        self.events.push(Event { topic, key: self.service.to_string(), time_ms, fields: strip_nulls(fields) });
    }

    fn build(&mut self) {
        let (service, sha, digest) = (self.service, self.sha.clone(), self.digest.clone());
        let repo = format!("acme/{service}");
        let pr = 1000 + self.n as i64;
        let run = format!("run-{:06}", self.n);
        self.push(
            Topic::Ci,
            0,
            json!({"kind": "pr_review", "repo": repo, "service": service, "commit_sha": sha,
            "pr_number": pr, "actor": self.reviewer, "author": self.author, "review_state": "approved"}),
        );
        self.push(
            Topic::Ci,
            5 * MIN,
            json!({"kind": "pr_merged", "repo": repo, "service": service, "commit_sha": sha,
            "pr_number": pr, "actor": self.reviewer, "author": self.author}),
        );
        self.push(Topic::Ci, 10 * MIN, json!({"kind": "build", "repo": repo, "service": service, "commit_sha": sha,
            "actor": "github-actions", "author": self.author, "outcome": "success", "artifact_digest": digest, "pipeline_run_id": run}));
        self.push(
            Topic::Ci,
            15 * MIN,
            json!({"kind": "test", "repo": repo, "service": service, "commit_sha": sha,
            "actor": "github-actions", "outcome": "success", "pipeline_run_id": run}),
        );
        let (sast_outcome, sca_critical) = match self.scan {
            Some(ScanFault::SastFailed) => ("failure", 0),
            Some(ScanFault::CriticalFindings) => ("success", 2),
            _ => ("success", 0),
        };
        if !matches!(self.scan, Some(ScanFault::NoSast)) {
            self.push(
                Topic::Ci,
                17 * MIN,
                json!({"kind": "scan", "repo": repo, "service": service, "commit_sha": sha,
                "actor": "github-actions", "outcome": sast_outcome, "scan_type": "sast", "findings_critical": 0,
                "findings_high": 1, "pipeline_run_id": run}),
            );
        }
        if !matches!(self.scan, Some(ScanFault::NoSca)) {
            self.push(
                Topic::Ci,
                18 * MIN,
                json!({"kind": "scan", "repo": repo, "service": service, "commit_sha": sha,
                "actor": "github-actions", "outcome": "success", "scan_type": "sca", "findings_critical": sca_critical,
                "findings_high": 0, "artifact_digest": digest, "pipeline_run_id": run}),
            );
        }
        let change_id = format!("CHG-{:06}", self.n);
        let cr_service =
            if matches!(self.change, Some(ChangeFault::OtherService)) { self.other_service } else { service };
        let cr = |action: &str, actor: &str| {
            json!({"change_id": change_id, "service": cr_service, "action": action,
            "actor": actor, "requester": self.author, "change_type": "normal",
            "window_start": self.t0 + 30 * MIN, "window_end": self.t0 + 4 * HOUR})
        };
        let (created, approved, rejected) =
            (cr("created", &self.author), cr("approved", &self.approver), cr("rejected", &self.approver));
        match self.change {
            Some(ChangeFault::NoChangeRequest) => {}
            Some(ChangeFault::NeverApproved) => self.push(Topic::Change, 20 * MIN, created),
            Some(ChangeFault::ApprovedAfterDeploy) => {
                self.push(Topic::Change, 20 * MIN, created);
                self.push(Topic::Change, 50 * MIN, approved);
            }
            Some(ChangeFault::RejectedAfterApproval) => {
                self.push(Topic::Change, 20 * MIN, created);
                self.push(Topic::Change, 25 * MIN, approved);
                self.push(Topic::Change, 35 * MIN, rejected);
            }
            Some(ChangeFault::OtherService) | None => {
                self.push(Topic::Change, 20 * MIN, created);
                self.push(Topic::Change, 25 * MIN, approved);
            }
        }
        let deploy_change = (!matches!(self.change, Some(ChangeFault::NoChangeRequest))).then(|| change_id.clone());
        let deploy = |env: &str, status: &str, id: String, actor: &str, automated: bool, change: &Option<String>| {
            json!({"deploy_id": id, "service": service, "environment": env, "commit_sha": sha, "artifact_digest": digest,
                "actor": actor, "automated": automated, "change_id": change, "status": status})
        };
        let staging = format!("stg-{:06}", self.n);
        self.push(Topic::Deploy, 28 * MIN, deploy("staging", "started", staging.clone(), "svc-deploybot", true, &None));
        self.push(Topic::Deploy, 30 * MIN, deploy("staging", "succeeded", staging, "svc-deploybot", true, &None));
        let (id, actor, automated) = (self.deploy_id(), self.deployer.clone(), self.automated);
        self.push(
            Topic::Deploy,
            40 * MIN,
            deploy("production", "started", id.clone(), &actor, automated, &deploy_change),
        );
        let last = if self.fails { "failed" } else { "succeeded" };
        self.push(Topic::Deploy, 45 * MIN, deploy("production", last, id, &actor, automated, &deploy_change));
    }
}

fn strip_nulls(fields: Map<String, Json>) -> Map<String, Json> {
    fields.into_iter().filter(|(_, v)| !v.is_null()).collect()
}

/// Every engineer holds production deploy access from the start.
pub(super) fn initial_grants(org: &Org, start_ms: i64) -> Vec<Event> {
    org.engineers
        .iter()
        .enumerate()
        .map(|(i, who)| {
            let fields = json!({"event_id": format!("access-init-{i:03}"), "event_time": start_ms, "action": "granted",
                "principal": who, "environment": "production", "role": "deployer", "granted_by": "okta-admin",
                "change_id": format!("ACC-{i:03}")});
            let Json::Object(fields) = fields else { unreachable!() };
            Event { topic: Topic::Access, key: who.clone(), time_ms: start_ms, fields }
        })
        .collect()
}

/// Staging access churn: harmless filler that brings a stream to its exact size.
pub(super) fn noise_access(org: &Org, rng: &mut ChaCha8Rng, k: u64, start_ms: i64, end_ms: i64) -> Event {
    let who = org.engineers[rng.random_range(0..org.engineers.len())].clone();
    let time_ms = rng.random_range(start_ms..end_ms);
    let action = if k % 2 == 0 { "granted" } else { "revoked" };
    let fields = json!({"event_id": format!("access-noise-{k:06}"), "event_time": time_ms, "action": action,
        "principal": who, "environment": "staging", "role": "developer", "granted_by": "okta-admin"});
    let Json::Object(fields) = fields else { unreachable!() };
    Event { topic: Topic::Access, key: who, time_ms, fields }
}
