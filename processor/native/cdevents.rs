//! CDEvents (<https://cdevents.dev>) over CloudEvents' Kafka binding: a
//! structured-mode CloudEvent whose `data` is the CDEvent, a binary-mode one
//! (the record is the CDEvent, the `ce_` headers carry the CloudEvent
//! attributes), or the bare CDEvent. `customData` carries what CDEvents
//! lacks (commit, actor, approver). Mapped:
//! - onto deploy: service.deployed/upgraded/rolledback, and the newer
//!   spec's deployment.started/finished (the act of deploying; its subject
//!   is the deployment, its service customData.service or the artifact's
//!   name);
//! - onto ci: change.merged/reviewed, testsuiterun.finished,
//!   pipelinerun.finished and build.finished (builds), artifact.packaged/
//!   published (a build of the artifact's digest);
//! - onto change: ticket.created/updated/closed (the ticket is the change
//!   request; an update is a decision when customData.action says which).
//!
//! The spec's own events carry no customData: each maps with what it does
//! carry, the commit left unknown (empty), so a control that needs it
//! finds nothing and fails. An artifact or a build of one still evidences
//! the artifact's digest. A test suite run or pipeline run naming no commit
//! evidences nothing (what it tested is unknown) and is ignored with that
//! reason. `change.reviewed` carries no verdict: unless customData says
//! one, the review is `commented`, never an approval.
//!
//! Every other CDEvents type (incident.*, *.started, …) is valid and says
//! nothing a control reads: ignored and counted, never dead-lettered.

use serde_json::{json, Value};

use super::{at, canonical, opt_text, text, Canonical, MapError, Payload};
use crate::schema::Topic;

/// The mapped `subject.predicate` pairs and the topic each maps onto.
const MAPPED: [(&str, &str, Topic); 15] = [
    ("service", "deployed", Topic::Deploy),
    ("service", "upgraded", Topic::Deploy),
    ("service", "rolledback", Topic::Deploy),
    ("deployment", "started", Topic::Deploy),
    ("deployment", "finished", Topic::Deploy),
    ("change", "merged", Topic::Ci),
    ("change", "reviewed", Topic::Ci),
    ("testsuiterun", "finished", Topic::Ci),
    ("pipelinerun", "finished", Topic::Ci),
    ("build", "finished", Topic::Ci),
    ("artifact", "packaged", Topic::Ci),
    ("artifact", "published", Topic::Ci),
    ("ticket", "created", Topic::Change),
    ("ticket", "updated", Topic::Change),
    ("ticket", "closed", Topic::Change),
];

/// The CloudEvent context of a CDEvent: from the CDEvent's own `context`,
/// else the structured CloudEvent's attributes, else the `ce_` headers.
struct Context {
    kind: String,
    id: String,
    source: String,
    time: String,
}

impl Context {
    fn of(p: Payload<'_>, event: &Value) -> Result<Context, MapError> {
        let attr = |name: &str| {
            opt_text(event, &format!("context.{name}"))
                .or_else(|| opt_text(p.value, ce_name(name)))
                .or_else(|| p.header(&format!("ce_{}", ce_name(name))).map(str::to_string))
                .ok_or_else(|| {
                    MapError::Unmappable(format!(
                        "`context.{name}` is missing (and no CloudEvent `{}` attribute or `ce_{}` header)",
                        ce_name(name),
                        ce_name(name)
                    ))
                })
        };
        Ok(Context { kind: attr("type")?, id: attr("id")?, source: attr("source")?, time: attr("timestamp")? })
    }
}

/// The CloudEvents attribute for a CDEvents context field.
fn ce_name(name: &str) -> &str {
    if name == "timestamp" {
        "time"
    } else {
        name
    }
}

pub(super) fn map(topic: Topic, p: Payload<'_>) -> Result<Vec<Canonical>, MapError> {
    let v = p.value;
    // Structured mode: the CloudEvent's data is the CDEvent.
    let event = if at(v, "context").is_some() || at(v, "subject").is_some() { v } else { at(v, "data").unwrap_or(v) };
    let ctx = Context::of(p, event)?;
    let Some(rest) = ctx.kind.strip_prefix("dev.cdevents.") else {
        return Err(MapError::Unmappable(format!("context.type `{}` is not a CDEvents type", ctx.kind)));
    };
    let mut parts = rest.split('.');
    let (subject, predicate) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    match MAPPED.iter().find(|(s, p, _)| *s == subject && *p == predicate) {
        None => return Ok(Vec::new()),
        Some((_, _, on)) if *on != topic => {
            return Err(MapError::Unmappable(format!("CDEvent `{}` maps onto the {on} topic, not {topic}", ctx.kind)))
        }
        Some(_) => {}
    }
    let e = Event { event, ctx: &ctx };
    let mapped = match (subject, predicate) {
        ("service", _) => e.deploy(predicate)?,
        ("deployment", _) => e.deployment(predicate)?,
        ("change", _) => e.change(predicate)?,
        ("testsuiterun", _) => e.test_run()?,
        ("pipelinerun" | "build", _) => e.build(predicate == "finished" && subject == "pipelinerun")?,
        ("artifact", _) => e.artifact()?,
        _ => e.ticket(predicate)?,
    };
    Ok(mapped.into_iter().map(canonical).collect())
}

/// A CDEvent and its context, for the mappers.
struct Event<'a> {
    event: &'a Value,
    ctx: &'a Context,
}

impl Event<'_> {
    fn custom(&self, key: &str) -> Option<String> {
        opt_text(self.event, &format!("customData.{key}"))
    }

    fn id(&self) -> String {
        format!("cdevents:{}:{}", self.ctx.source, self.ctx.id)
    }

    /// The commit, or why an event without one evidences nothing.
    fn commit_or_ignore(&self, why: &'static str) -> Result<String, MapError> {
        self.custom("commit_sha").ok_or(MapError::Ignored(why))
    }

    /// The commit when customData names it; unknown (empty) otherwise.
    fn commit_if_known(&self) -> String {
        self.custom("commit_sha").unwrap_or_default()
    }

    /// customData.service, else the name in the artifact's purl.
    fn service_of(&self, purl: Option<&str>) -> Option<String> {
        self.custom("service").or_else(|| purl.and_then(purl_name))
    }

    /// deployment.started/finished: the act of deploying an artifact to an
    /// environment (finished: by its outcome).
    fn deployment(&self, predicate: &str) -> Result<Option<Value>, MapError> {
        let event = self.event;
        let artifact = opt_text(event, "subject.content.artifactId");
        let digest = artifact.as_deref().map(purl_digest).transpose()?;
        let service = self.service_of(artifact.as_deref()).ok_or_else(|| {
            MapError::Unmappable("customData.service is missing and the deployment names no artifact".into())
        })?;
        let status = match (predicate, opt_text(event, "subject.content.outcome").as_deref()) {
            ("started", _) => "started",
            (_, Some("success")) => "succeeded",
            (_, Some("cancel" | "cancelled")) => {
                return Err(MapError::Ignored("a cancelled deployment changed nothing"))
            }
            (_, Some("fail" | "failure" | "error")) => "failed",
            // No outcome, or one not known: judged as a deploy that happened,
            // so the deploy controls look at it (fail closed).
            _ => "succeeded",
        };
        let actor = self.custom("actor");
        Ok(Some(json!({
            "event_id": self.id(),
            "event_time": self.ctx.time,
            "deploy_id": self.custom("deploy_id").unwrap_or_else(|| text(event, "subject.id").unwrap_or_else(|_| self.ctx.id.clone())),
            "service": service,
            "environment": text(event, "subject.content.environment.id")?,
            "commit_sha": self.commit_if_known(),
            "artifact_digest": digest,
            "automated": actor.is_none() || self.custom("automated").is_some_and(|a| a == "true"),
            "actor": actor.unwrap_or_else(|| self.ctx.source.clone()),
            "change_id": self.custom("change_id"),
            "status": status,
        })))
    }

    fn deploy(&self, predicate: &str) -> Result<Option<Value>, MapError> {
        let event = self.event;
        let artifact = opt_text(event, "subject.content.artifactId");
        let digest = artifact.as_deref().map(purl_digest).transpose()?;
        let actor = self.custom("actor");
        let status = if predicate == "rolledback" { "rolled_back" } else { "succeeded" };
        Ok(Some(json!({
            "event_id": self.id(),
            "event_time": self.ctx.time,
            "deploy_id": self.custom("deploy_id").unwrap_or_else(|| self.ctx.id.clone()),
            "service": text(event, "subject.id")?,
            "environment": text(event, "subject.content.environment.id")?,
            // A deploy whose commit is unknown cannot be evidenced; the
            // commit-based controls will say so.
            "commit_sha": self.custom("commit_sha").unwrap_or_default(),
            "artifact_digest": digest,
            "automated": actor.is_none() || self.custom("automated").is_some_and(|a| a == "true"),
            "actor": actor.unwrap_or_else(|| self.ctx.source.clone()),
            "change_id": self.custom("change_id"),
            "status": status,
        })))
    }

    fn change(&self, predicate: &str) -> Result<Option<Value>, MapError> {
        let repo = text(self.event, "subject.content.repository.id")?;
        let service = repo.rsplit('/').next().unwrap_or(&repo).to_string();
        Ok(Some(json!({
            "event_id": self.id(),
            "event_time": self.ctx.time,
            "kind": if predicate == "merged" { "pr_merged" } else { "pr_review" },
            "repo": repo,
            "service": service,
            "commit_sha": self.custom("commit_sha").unwrap_or_default(),
            "pr_number": self.custom("pr_number").and_then(|n| n.parse::<i64>().ok()),
            "actor": self.custom("actor"),
            "author": self.custom("author"),
            // The spec's review has no verdict: never an approval unless
            // customData says so.
            "review_state": (predicate == "reviewed")
                .then(|| self.custom("review_state").map_or_else(|| "commented".into(), |s| s.to_lowercase())),
        })))
    }

    fn test_run(&self) -> Result<Option<Value>, MapError> {
        let commit =
            self.commit_or_ignore("a test suite run naming no commit (customData.commit_sha) tested nothing known")?;
        let service = self
            .custom("service")
            .unwrap_or_else(|| text(self.event, "subject.content.testSuite.name").unwrap_or_default());
        Ok(Some(json!({
            "event_id": self.id(),
            "event_time": self.ctx.time,
            "kind": "test",
            "repo": self.custom("repo").unwrap_or_else(|| service.clone()),
            "service": service,
            "commit_sha": commit,
            "actor": self.ctx.source,
            "outcome": outcome(&text(self.event, "subject.content.outcome")?),
            "pipeline_run_id": text(self.event, "subject.id")?,
        })))
    }

    /// pipelineRun.finished (its outcome) or build.finished (a build that
    /// finished produced its artifact: success).
    fn build(&self, pipeline: bool) -> Result<Option<Value>, MapError> {
        let purl = opt_text(self.event, "subject.content.artifactId").or_else(|| self.custom("artifact_id"));
        let digest = purl.as_deref().map(purl_digest).transpose()?.or_else(|| self.custom("artifact_digest"));
        // A build of a known artifact evidences its digest; with neither a
        // commit nor an artifact, a run evidences nothing.
        let commit = match (&digest, pipeline) {
            (Some(_), false) => self.commit_if_known(),
            (_, true) => {
                self.commit_or_ignore("a pipeline run naming no commit (customData.commit_sha) built nothing known")?
            }
            (None, false) => {
                self.commit_or_ignore("a build naming neither a commit nor an artifact built nothing known")?
            }
        };
        let name = opt_text(self.event, "subject.content.pipelineName");
        let service = self.service_of(purl.as_deref()).or(name).ok_or_else(|| {
            MapError::Unmappable("customData.service is missing (and the event names no pipeline or artifact)".into())
        })?;
        let outcome = if pipeline { outcome(&text(self.event, "subject.content.outcome")?) } else { "success" };
        Ok(Some(self.ci_build(commit, service, outcome, digest, Some(text(self.event, "subject.id")?))))
    }

    /// artifact.packaged/published: CI made (or pushed) the artifact whose
    /// purl is the subject — a successful build of that digest.
    fn artifact(&self) -> Result<Option<Value>, MapError> {
        let commit = self.commit_if_known();
        let purl = text(self.event, "subject.id")?;
        let digest = purl_digest(&purl)?;
        let service = self.service_of(Some(&purl)).ok_or_else(|| {
            MapError::Unmappable(format!("customData.service is missing and `{purl}` names no artifact"))
        })?;
        Ok(Some(self.ci_build(commit, service, "success", Some(digest), self.custom("pipeline_run_id"))))
    }

    /// A ci `build` event of this CDEvent.
    fn ci_build(
        &self,
        commit: String,
        service: String,
        outcome: &str,
        digest: Option<String>,
        run: Option<String>,
    ) -> Value {
        json!({
            "event_id": self.id(),
            "event_time": self.ctx.time,
            "kind": "build",
            "repo": self.custom("repo").unwrap_or_else(|| service.clone()),
            "service": service,
            "commit_sha": commit,
            "actor": self.ctx.source,
            "outcome": outcome,
            "artifact_digest": digest,
            "pipeline_run_id": run,
        })
    }
}

impl Event<'_> {
    /// A ticket is a change request: created; updated with customData.action
    /// (approved, rejected, implemented, cancelled) by customData.approver or
    /// content.updatedBy; closed (cancelled when its resolution says so).
    /// The service is customData.service, else the ticket's group; the change
    /// type customData.change_type, else a label naming one.
    fn ticket(&self, predicate: &str) -> Result<Option<Value>, MapError> {
        let content = |key: &str| opt_text(self.event, &format!("subject.content.{key}"));
        let (action, actor) = match predicate {
            "created" => ("created".to_string(), content("creator")),
            "updated" => match self.custom("action") {
                Some(a) => (a, self.custom("approver").or_else(|| content("updatedBy"))),
                None => return Ok(None), // an edit, not a decision
            },
            _ => {
                let resolution = content("resolution").unwrap_or_default().to_lowercase();
                let cancelled =
                    ["cancel", "won't", "wont", "duplicate", "rejected"].iter().any(|r| resolution.contains(r));
                (if cancelled { "cancelled" } else { "closed" }.to_string(), content("updatedBy"))
            }
        };
        let labels = at(self.event, "subject.content.labels").and_then(Value::as_array);
        let change_type = self.custom("change_type").or_else(|| {
            labels?
                .iter()
                .filter_map(Value::as_str)
                .find(|l| matches!(*l, "standard" | "normal" | "emergency"))
                .map(str::to_string)
        });
        let service = self.custom("service").or_else(|| content("group")).ok_or_else(|| {
            MapError::Unmappable("customData.service is missing and the ticket names no group".into())
        })?;
        Ok(Some(json!({
            "event_id": self.id(),
            "event_time": self.ctx.time,
            "change_id": text(self.event, "subject.id")?,
            "service": service,
            "action": action,
            "actor": actor.or_else(|| content("creator")).unwrap_or_else(|| self.ctx.source.clone()),
            "requester": content("creator"),
            "change_type": change_type,
            "window_start": self.custom("window_start"),
            "window_end": self.custom("window_end"),
        })))
    }
}

/// A CDEvents outcome as a canonical one.
fn outcome(o: &str) -> &'static str {
    match o {
        "pass" | "success" => "success",
        "fail" | "failure" => "failure",
        "cancel" | "cancelled" => "cancelled",
        _ => "error",
    }
}

/// `pkg:oci/name@sha256%3Aabc…?repository_url=…` → `sha256:abc…`.
pub(crate) fn purl_digest(purl: &str) -> Result<String, MapError> {
    let bad = || MapError::Unmappable(format!("artifact id `{purl}` is not a purl with a sha256 version"));
    let version = purl.split_once('@').ok_or_else(bad)?.1;
    let version = version.split(['?', '#']).next().unwrap_or_default();
    let decoded = version.replace("%3A", ":").replace("%3a", ":");
    let hex = decoded.strip_prefix("sha256:").ok_or_else(bad)?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// `pkg:oci/myapp@sha256%3A…` → `myapp` (the purl's name, without its
/// namespace).
fn purl_name(purl: &str) -> Option<String> {
    let rest = purl.strip_prefix("pkg:")?;
    let path = rest.split(['@', '?', '#']).next()?;
    let name = path.rsplit('/').next()?;
    (!name.is_empty() && path.contains('/')).then(|| name.replace("%40", "@"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_decode_to_digests() {
        let d = "0b31b1c02ff458ad9b7b81cbdf8f028bd54699fa151f221d1e8de6817db93427";
        assert_eq!(purl_digest(&format!("pkg:oci/myapp@sha256%3A{d}")).unwrap(), format!("sha256:{d}"));
        assert_eq!(
            purl_digest(&format!("pkg:oci/myapp@sha256%3A{d}?repository_url=x")).unwrap(),
            format!("sha256:{d}")
        );
        assert!(purl_digest("pkg:oci/myapp@latest").is_err());
        assert_eq!(purl_name(&format!("pkg:oci/myapp@sha256%3A{d}")).as_deref(), Some("myapp"));
        assert_eq!(purl_name("pkg:maven/org.acme/ledger@1.0").as_deref(), Some("ledger"));
        assert_eq!(purl_name("not-a-purl"), None);
    }
}
