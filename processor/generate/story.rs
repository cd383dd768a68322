//! One production deploy and everything that leads up to it.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value as Json};

use super::faults::{
    AccessFault, BuildFault, ChangeFault, ElevationFault, Faults, GrantFault, ReviewFault, ScanFault, TestFault,
};
use super::{hex_id, Event, Org, Truth};
use crate::schema::Topic;

/// Events a story writes on average (a bent one may write fewer or more).
pub(super) const EVENTS_PER_STORY: usize = 13;
/// From a story's first event to its last (a late break-glass revocation).
pub(super) const STORY_SPAN_MS: i64 = 5 * HOUR;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;

pub(super) struct Story {
    n: u64,
    t0: i64,
    service: &'static str,
    other_service: &'static str,
    /// Principals (see [`Org`] for how each tool names them).
    author: String,
    reviewer: String,
    approver: String,
    /// The deploy's actor as the deploy tool names it, and whether it is the pipeline.
    deployer: String,
    automated: bool,
    sha: String,
    digest: String,
    faults: Faults,
    events: Vec<Event>,
    /// Event ids of the AC-02 and AC-03 triggers, when the story has them.
    grant_id: Option<String>,
    elevation_id: Option<String>,
}

impl Story {
    pub(super) fn draw(org: &Org, rng: &mut ChaCha8Rng, n: u64, t0: i64, rate: f64) -> Story {
        let pick = |rng: &mut ChaCha8Rng, v: &[String]| v[rng.random_range(0..v.len())].clone();
        let service = org.services[rng.random_range(0..org.services.len())];
        let other_service = org.services.iter().copied().find(|s| *s != service).unwrap_or(service);
        let author = pick(rng, &org.engineers);
        let other = |rng: &mut ChaCha8Rng| loop {
            let r = pick(rng, &org.engineers);
            if r != author {
                break r;
            }
        };
        let reviewer = other(rng);
        let faults = Faults::draw(rng, rate);
        let automated = !faults.forces_human() && rng.random_bool(0.7);
        let deployer = if faults.self_deploy {
            Org::email(&author)
        } else if faults.access.is_some() {
            format!("contractor-{n:06}@vendor.example")
        } else if automated {
            org.pipeline_account.to_string()
        } else {
            Org::email(&other(rng))
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
            faults,
            events: Vec::new(),
            grant_id: None,
            elevation_id: None,
        };
        story.build(rng);
        story
    }

    pub(super) fn len(&self) -> usize {
        self.events.len()
    }

    pub(super) fn write(self, events: &mut Vec<Event>, truth: &mut Truth) {
        let f = &self.faults;
        let deploy_id = self.deploy_id();
        let on_deploy = [
            ("CM-01", f.change.is_some()),
            ("CM-02", f.outside_window),
            ("CM-04", f.emergency_unapproved),
            ("SOD-02", f.self_deploy),
            ("TST-01", f.test.is_some()),
            ("SEC-01", f.scan.is_some()),
            ("INT-01", f.build.is_some()),
            ("AC-01", f.access.is_some()),
            ("AUD-01", f.hangs),
        ];
        for (control, hit) in on_deploy {
            if hit {
                truth.expect(control, &deploy_id);
            }
        }
        if f.self_approved_change {
            truth.expect("CM-03", &self.change_id());
        }
        if f.review.is_some() {
            truth.expect("SOD-01", &format!("{}#{}", self.repo(), self.pr()));
        }
        if let (Some(_), Some(id)) = (f.grant_fault, &self.grant_id) {
            truth.expect("AC-02", id);
        }
        if let (Some(_), Some(id)) = (f.elevation_fault, &self.elevation_id) {
            truth.expect("AC-03", id);
        }
        events.extend(self.events);
    }

    fn deploy_id(&self) -> String {
        format!("dep-{:06}", self.n)
    }

    fn change_id(&self) -> String {
        format!("CHG-{:06}", self.n)
    }

    fn repo(&self) -> String {
        format!("acme/{}", self.service)
    }

    fn pr(&self) -> i64 {
        1000 + self.n as i64
    }

    /// Adds an event at t0 + `dt`; returns its event id.
    fn push(&mut self, topic: Topic, dt: i64, fields: Json) -> String {
        let time_ms = self.t0 + dt;
        let Json::Object(mut fields) = fields else { return String::new() };
        let seq = self.events.len();
        let id = format!("{}-{:06}-{seq:02}", topic.name(), self.n);
        fields.insert("event_id".into(), json!(id));
        fields.insert("event_time".into(), json!(time_ms));
        let key = partition_key(topic, &fields).unwrap_or_else(|| self.service.to_string());
        self.events.push(Event { topic, key, time_ms, fields: strip_nulls(fields) });
        id
    }

    fn build(&mut self, rng: &mut ChaCha8Rng) {
        self.code();
        self.change();
        self.access(rng);
        self.deploys();
    }

    /// Review, merge, build, test and scans of the commit.
    fn code(&mut self) {
        let (service, sha, digest, repo, pr) =
            (self.service, self.sha.clone(), self.digest.clone(), self.repo(), self.pr());
        let run = format!("run-{:06}", self.n);
        let f = self.faults.clone();
        let ci = |kind: &str, extra: Json| {
            let mut base = json!({"kind": kind, "repo": repo, "service": service, "commit_sha": sha});
            if let (Some(b), Json::Object(e)) = (base.as_object_mut(), extra) {
                b.extend(e);
            }
            base
        };
        let (reviewer, state) = match f.review {
            Some(ReviewFault::SelfApproved) => (Org::github(&self.author), "approved"),
            Some(ReviewFault::ChangesRequested) => (Org::github(&self.reviewer), "changes_requested"),
            _ => (Org::github(&self.reviewer), "approved"),
        };
        let author = Org::github(&self.author);
        if !matches!(f.review, Some(ReviewFault::NoReview)) {
            let review =
                ci("pr_review", json!({"pr_number": pr, "actor": reviewer, "author": author, "review_state": state}));
            self.push(Topic::Ci, 0, review);
        }
        let merge = ci("pr_merged", json!({"pr_number": pr, "actor": Org::github(&self.reviewer), "author": author}));
        self.push(Topic::Ci, 5 * MIN, merge);
        if !matches!(f.build, Some(BuildFault::NoBuild)) {
            let build = ci(
                "build",
                json!({"actor": "github-actions", "author": author, "outcome": "success",
                "artifact_digest": digest, "pipeline_run_id": run}),
            );
            self.push(Topic::Ci, 10 * MIN, build);
        }
        if !matches!(f.test, Some(TestFault::NoTest)) {
            let outcome = if matches!(f.test, Some(TestFault::Failed)) { "failure" } else { "success" };
            let test = ci("test", json!({"actor": "github-actions", "outcome": outcome, "pipeline_run_id": run}));
            self.push(Topic::Ci, 15 * MIN, test);
        }
        let (sast_outcome, sca_critical) = match f.scan {
            Some(ScanFault::SastFailed) => ("failure", 0),
            Some(ScanFault::CriticalFindings) => ("success", 2),
            _ => ("success", 0),
        };
        if !matches!(f.scan, Some(ScanFault::NoSast)) {
            let sast = ci(
                "scan",
                json!({"actor": "github-actions", "outcome": sast_outcome, "scan_type": "sast",
                "findings_critical": 0, "findings_high": 1, "pipeline_run_id": run}),
            );
            self.push(Topic::Ci, 17 * MIN, sast);
        }
        if !matches!(f.scan, Some(ScanFault::NoSca)) {
            let sca = ci(
                "scan",
                json!({"actor": "github-actions", "outcome": "success", "scan_type": "sca",
                "findings_critical": sca_critical, "findings_high": 0, "artifact_digest": digest, "pipeline_run_id": run}),
            );
            self.push(Topic::Ci, 18 * MIN, sca);
        }
    }

    /// The change request and its approval (or the lack of one).
    fn change(&mut self) {
        let f = self.faults.clone();
        let change_id = self.change_id();
        let cr_service =
            if matches!(f.change, Some(ChangeFault::OtherService)) { self.other_service } else { self.service };
        let requester = Org::email(&self.author);
        let (change_type, window) = if f.emergency {
            ("emergency", None)
        } else if f.outside_window {
            ("normal", Some((self.t0 + 50 * MIN, self.t0 + 4 * HOUR)))
        } else {
            ("normal", Some((self.t0 + 30 * MIN, self.t0 + 4 * HOUR)))
        };
        let cr = |action: &str, actor: &str| {
            json!({"change_id": change_id, "service": cr_service, "action": action, "actor": actor,
                "requester": requester, "change_type": change_type,
                "window_start": window.map(|w| w.0), "window_end": window.map(|w| w.1)})
        };
        // CM-03's requester approves under the name the ticketing tool knows them by.
        let approver = if f.self_approved_change { self.author.clone() } else { Org::email(&self.approver) };
        let (created, approved, rejected) =
            (cr("created", &requester), cr("approved", &approver), cr("rejected", &Org::email(&self.approver)));
        if f.emergency {
            self.push(Topic::Change, 20 * MIN, created);
            if !f.emergency_unapproved {
                self.push(Topic::Change, 105 * MIN, approved);
            }
            return;
        }
        match f.change {
            Some(ChangeFault::NoChangeRequest) => {}
            Some(ChangeFault::NeverApproved) => {
                self.push(Topic::Change, 20 * MIN, created);
            }
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
    }

    /// Access around the story: the contractor of an AC-01 fault, a new
    /// hire's grant (AC-02), a break-glass elevation (AC-03).
    fn access(&mut self, rng: &mut ChaCha8Rng) {
        let f = self.faults.clone();
        let n = self.n;
        match f.access {
            Some(AccessFault::RevokedJustBefore) => {
                let who = self.deployer.clone();
                self.granted(&who, MIN, None);
                self.push(Topic::Access, 45 * MIN - 1_000, access_event("revoked", &who, "deployer", json!({})));
            }
            Some(AccessFault::Expired) => {
                let who = self.deployer.clone();
                self.granted(&who, MIN, Some(self.t0 + 44 * MIN));
            }
            Some(AccessFault::NeverGranted) | None => {}
        }
        if f.grant {
            let who = format!("newhire-{n:06}@acme.example");
            let request = format!("ACC-{n:06}-G");
            let granted_by =
                if matches!(f.grant_fault, Some(GrantFault::SelfGranted)) { who.clone() } else { IT_MANAGER.into() };
            match f.grant_fault {
                Some(GrantFault::NoRequest) => {}
                Some(GrantFault::RequestNotApproved) => {
                    self.push(Topic::Change, 6 * MIN, access_request(&request, "created", &who, &who));
                }
                _ => {
                    self.push(Topic::Change, 6 * MIN, access_request(&request, "created", &who, &who));
                    self.push(Topic::Change, 7 * MIN, access_request(&request, "approved", IT_MANAGER, &who));
                }
            }
            let change_id = (!matches!(f.grant_fault, Some(GrantFault::NoRequest))).then_some(request);
            let grant =
                access_event("granted", &who, "deployer", json!({"granted_by": granted_by, "change_id": change_id}));
            self.grant_id = Some(self.push(Topic::Access, 8 * MIN, grant));
        }
        if f.elevation {
            let who = format!("oncall-{n:06}@acme.example");
            let expires = (f.elevation_fault.is_none() && rng.random_bool(0.5)).then_some(self.t0 + 2 * MIN + 3 * HOUR);
            let elevate = access_event(
                "elevated",
                &who,
                "break-glass",
                json!({"granted_by": "pagerduty", "change_id": format!("INC-{n:06}"), "expires_at": expires}),
            );
            self.elevation_id = Some(self.push(Topic::Access, 2 * MIN, elevate));
            let revoke_at = match f.elevation_fault {
                Some(ElevationFault::NeverRevoked) => None,
                Some(ElevationFault::RevokedLate) => Some(2 * MIN + 4 * HOUR + 1_000),
                None if expires.is_some() => None,
                None => Some(62 * MIN),
            };
            if let Some(at) = revoke_at {
                self.push(Topic::Access, at, access_event("revoked", &who, "break-glass", json!({})));
            }
        }
    }

    /// An approved access request and the grant it justifies.
    fn granted(&mut self, who: &str, at: i64, expires_at: Option<i64>) {
        let request = format!("ACC-{:06}-C", self.n);
        self.push(Topic::Change, at - 30_000, access_request(&request, "created", who, who));
        self.push(Topic::Change, at - 20_000, access_request(&request, "approved", IT_MANAGER, who));
        let grant = access_event(
            "granted",
            who,
            "deployer",
            json!({"granted_by": IT_MANAGER, "change_id": request, "expires_at": expires_at}),
        );
        self.push(Topic::Access, at, grant);
    }

    /// Staging, then production.
    fn deploys(&mut self) {
        let f = self.faults.clone();
        let (service, sha) = (self.service, self.sha.clone());
        let digest = match f.build {
            Some(BuildFault::DigestNotBuilt) => format!("sha256:{}", "e".repeat(64)),
            _ => self.digest.clone(),
        };
        let change = (!matches!(f.change, Some(ChangeFault::NoChangeRequest))).then(|| self.change_id());
        let deploy = |env: &str, status: &str, id: &str, actor: &str, automated: bool, change: &Option<String>| {
            json!({"deploy_id": id, "service": service, "environment": env, "commit_sha": sha, "artifact_digest": digest,
                "actor": actor, "automated": automated, "change_id": change, "status": status})
        };
        let staging = format!("stg-{:06}", self.n);
        let bot = "svc-deploybot";
        self.push(Topic::Deploy, 28 * MIN, deploy("staging", "started", &staging, bot, true, &None));
        self.push(Topic::Deploy, 30 * MIN, deploy("staging", "succeeded", &staging, bot, true, &None));
        let (id, actor, automated) = (self.deploy_id(), self.deployer.clone(), self.automated);
        self.push(Topic::Deploy, 40 * MIN, deploy("production", "started", &id, &actor, automated, &change));
        if !f.hangs {
            let last = if f.fails { "failed" } else { "succeeded" };
            self.push(Topic::Deploy, 45 * MIN, deploy("production", last, &id, &actor, automated, &change));
        }
    }
}

/// The Kafka key a tool would give the event, when it is not the service:
/// access events and access requests are keyed by the principal, so that a
/// grant and its request land in the same partition number of their topics.
fn partition_key(topic: Topic, fields: &Map<String, Json>) -> Option<String> {
    let text = |k: &str| fields.get(k).and_then(Json::as_str).map(str::to_string);
    match topic {
        Topic::Access => text("principal"),
        Topic::Change if text("service").as_deref() == Some("access") => text("requester"),
        _ => None,
    }
}

const IT_MANAGER: &str = "it-manager@acme.example";

fn access_event(action: &str, who: &str, role: &str, extra: Json) -> Json {
    let mut base = json!({"action": action, "principal": who, "environment": "production", "role": role});
    if let (Some(b), Json::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

fn access_request(id: &str, action: &str, actor: &str, requester: &str) -> Json {
    json!({"change_id": id, "service": "access", "action": action, "actor": actor, "requester": requester,
        "change_type": "standard"})
}

fn strip_nulls(fields: Map<String, Json>) -> Map<String, Json> {
    fields.into_iter().filter(|(_, v)| !v.is_null()).collect()
}

/// Every engineer holds production deploy access from the start, each
/// grant justified by an approved access request.
pub(super) fn initial_grants(org: &Org, start_ms: i64) -> Vec<Event> {
    let mut out = Vec::new();
    for (i, name) in org.engineers.iter().enumerate() {
        let who = Org::email(name);
        let request = format!("ACC-INIT-{i:03}");
        let mut push = |topic: Topic, dt: i64, suffix: &str, fields: Json| {
            let Json::Object(mut fields) = fields else { return };
            fields.insert("event_id".into(), json!(format!("{}-init-{i:03}-{suffix}", topic.name())));
            fields.insert("event_time".into(), json!(start_ms + dt));
            let key = partition_key(topic, &fields).unwrap_or_else(|| who.clone());
            out.push(Event { topic, key, time_ms: start_ms + dt, fields: strip_nulls(fields) });
        };
        push(Topic::Change, MIN, "created", access_request(&request, "created", &who, &who));
        push(Topic::Change, 2 * MIN, "approved", access_request(&request, "approved", IT_MANAGER, &who));
        let grant = access_event("granted", &who, "deployer", json!({"granted_by": IT_MANAGER, "change_id": request}));
        push(Topic::Access, 5 * MIN, "granted", grant);
    }
    out
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
