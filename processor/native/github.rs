//! GitHub webhooks, exactly as GitHub sends them. The event is the record's
//! X-GitHub-Event header when a bridge forwards it, else told by the
//! payload's shape. Onto ci: pull_request (merged), pull_request_review
//! (submitted), code_scanning_alert (raised), workflow_run / check_run /
//! check_suite (completed). Onto deploy: deployment (created) and
//! deployment_status.

use serde_json::{json, Value};

use super::config::GithubConfig;
use super::{at, canonical, opt_text, text, Canonical, MapError, Payload};
use crate::schema::Topic;

/// The webhook events mapped, and the topic each maps onto.
const EVENTS: [(&str, Topic); 8] = [
    ("pull_request", Topic::Ci),
    ("pull_request_review", Topic::Ci),
    ("code_scanning_alert", Topic::Ci),
    ("workflow_run", Topic::Ci),
    ("check_run", Topic::Ci),
    ("check_suite", Topic::Ci),
    ("deployment", Topic::Deploy),
    ("deployment_status", Topic::Deploy),
];

pub(super) fn map(topic: Topic, p: Payload<'_>, config: &GithubConfig) -> Result<Vec<Canonical>, MapError> {
    let v = p.value;
    let Some(event) = p.header("x-github-event").or_else(|| shape(v)) else {
        if is_webhook(v) {
            return Ok(Vec::new()); // push, issues, ping, …: valid, nothing Vigil uses
        }
        let known = EVENTS.map(|(e, _)| e).join(", ");
        return Err(MapError::Unmappable(format!("not a GitHub webhook Vigil maps ({known})")));
    };
    match EVENTS.iter().find(|(e, _)| *e == event) {
        None => return Ok(Vec::new()), // push, ping, …: valid, nothing Vigil uses
        Some((_, on)) if *on != topic => {
            return Err(MapError::Unmappable(format!("GitHub {event} webhooks map onto the {on} topic, not {topic}")))
        }
        Some(_) => {}
    }
    match event {
        "pull_request" => pull_request(v),
        "pull_request_review" => review(v),
        "code_scanning_alert" => code_scanning_alert(v),
        "workflow_run" | "check_run" | "check_suite" => run(v, event, config),
        "deployment" => deployment(v),
        _ => deployment_status(v),
    }
}

/// The event a payload is, told by its shape (a payload read from a file
/// has no X-GitHub-Event header). Deployments come first: one created by
/// GitHub Actions also carries the `workflow_run` and `workflow` (and may
/// carry a `check_run`) that created it.
fn shape(v: &Value) -> Option<&'static str> {
    let has = |key: &str| v.get(key).is_some();
    Some(match () {
        _ if has("deployment_status") && has("deployment") => "deployment_status",
        _ if has("deployment") => "deployment",
        _ if has("review") && has("pull_request") => "pull_request_review",
        _ if has("pull_request") => "pull_request",
        _ if has("alert") && has("commit_oid") => "code_scanning_alert",
        _ if has("workflow_run") => "workflow_run",
        _ if has("check_run") => "check_run",
        _ if has("check_suite") => "check_suite",
        _ => return None,
    })
}

/// Whether a payload of no event Vigil maps is still a GitHub webhook (a
/// push, an issue, a ping, …): every one names its sender and what it
/// happened in, or is the ping sent when a hook is made.
fn is_webhook(v: &Value) -> bool {
    let has = |key: &str| v.get(key).is_some_and(Value::is_object);
    (has("sender") && (has("repository") || has("organization") || has("installation")))
        || (v.get("zen").is_some() && v.get("hook_id").is_some())
}

/// A deployment's status: success → succeeded, failure/error → failed,
/// queued/pending/in_progress → started. The deployment's `payload` may
/// carry what GitHub does not (artifact_digest, change_id). A deployment
/// created by a bot account (a pipeline) is automated.
fn deployment_status(v: &Value) -> Result<Vec<Canonical>, MapError> {
    let status = match text(v, "deployment_status.state")?.as_str() {
        "success" => "succeeded",
        "failure" | "error" => "failed",
        "queued" | "pending" | "in_progress" => "started",
        _ => return Ok(Vec::new()), // inactive: superseded, nothing happened
    };
    let full_name = text(v, "repository.full_name")?;
    let status_id = at(v, "deployment_status.id").map(Value::to_string).unwrap_or_default();
    let environment =
        opt_text(v, "deployment_status.environment").map_or_else(|| text(v, "deployment.environment"), Ok)?;
    let id = format!("github:{full_name}:deployment_status/{status_id}");
    deploy(v, id, text(v, "deployment_status.created_at")?, environment, status)
}

/// A deployment created: a deploy started (its statuses follow).
fn deployment(v: &Value) -> Result<Vec<Canonical>, MapError> {
    if text(v, "action")? != "created" {
        return Ok(Vec::new());
    }
    let full_name = text(v, "repository.full_name")?;
    let id = at(v, "deployment.id").map(Value::to_string).unwrap_or_default();
    let id = format!("github:{full_name}:deployment/{id}");
    deploy(v, id, text(v, "deployment.created_at")?, text(v, "deployment.environment")?, "started")
}

fn deploy(
    v: &Value,
    event_id: String,
    time: String,
    environment: String,
    status: &str,
) -> Result<Vec<Canonical>, MapError> {
    let full_name = text(v, "repository.full_name")?;
    let deployment = at(v, "deployment.id").map(Value::to_string).unwrap_or_default();
    let event = json!({
        "event_id": event_id,
        "event_time": time,
        "deploy_id": format!("{full_name}/deployments/{deployment}"),
        "service": text(v, "repository.name")?,
        "environment": environment,
        "commit_sha": text(v, "deployment.sha")?,
        "artifact_digest": opt_text(v, "deployment.payload.artifact_digest"),
        "actor": text(v, "deployment.creator.login")?,
        "automated": opt_text(v, "deployment.creator.type").as_deref() == Some("Bot"),
        "change_id": opt_text(v, "deployment.payload.change_id"),
        "status": status,
    });
    Ok(vec![canonical(event)])
}

/// A completed workflow run, check run or check suite: a security scan when
/// its name (the app's, for a suite) matches `[native.github] scans`, a
/// test run when it matches `test_names`, else a build. Skipped and neutral runs ran nothing and map to nothing.
fn run(v: &Value, event: &str, config: &GithubConfig) -> Result<Vec<Canonical>, MapError> {
    if text(v, "action")? != "completed" {
        return Ok(Vec::new());
    }
    let outcome = match opt_text(v, &format!("{event}.conclusion")).as_deref() {
        Some("success") => "success",
        Some("failure" | "timed_out" | "startup_failure") => "failure",
        Some("cancelled") => "cancelled",
        Some("action_required") => "error",
        _ => return Ok(Vec::new()), // skipped, neutral, stale
    };
    let full_name = text(v, "repository.full_name")?;
    let id = at(v, &format!("{event}.id")).map(Value::to_string).unwrap_or_default();
    let (name, time, actor, path) = match event {
        "workflow_run" => (
            workflow_name(v)?,
            text(v, "workflow_run.updated_at")?,
            opt_text(v, "workflow_run.triggering_actor.login").or_else(|| opt_text(v, "workflow_run.actor.login")),
            format!(
                "actions/runs/{id}/attempts/{}",
                at(v, "workflow_run.run_attempt").map_or(1, |a| a.as_i64().unwrap_or(1))
            ),
        ),
        "check_run" => (
            text(v, "check_run.name")?,
            text(v, "check_run.completed_at")?,
            opt_text(v, "check_run.app.slug"),
            format!("check-runs/{id}"),
        ),
        _ => (
            text(v, "check_suite.app.name")?,
            text(v, "check_suite.updated_at")?,
            opt_text(v, "check_suite.app.slug"),
            format!("check-suites/{id}"),
        ),
    };
    let scan_type = config.scan_type(&name);
    let kind = match scan_type {
        Some(_) => "scan",
        None if config.is_test(&name) => "test",
        None => "build",
    };
    let event = json!({
        "event_id": format!("github:{full_name}:{path}"),
        "event_time": time,
        "kind": kind,
        "scan_type": scan_type,
        "repo": full_name,
        "service": text(v, "repository.name")?,
        "commit_sha": text(v, &format!("{event}.head_sha"))?,
        "actor": actor,
        "outcome": outcome,
        "pipeline_run_id": path,
    });
    Ok(vec![canonical(event)])
}

/// A workflow run's name, else (a run of a workflow with no `name:`) its
/// workflow's name, else the workflow file's path, which is what GitHub
/// shows for such a run.
fn workflow_name(v: &Value) -> Result<String, MapError> {
    ["workflow_run.name", "workflow.name", "workflow_run.path", "workflow.path"]
        .iter()
        .find_map(|path| opt_text(v, path).filter(|n| !n.trim().is_empty()))
        .ok_or_else(|| MapError::Unmappable("the workflow run has no name and no workflow path".into()))
}

/// A code-scanning alert raised (created, reopened) on a commit: a SAST
/// finding of that commit, critical when its security severity is. Fixed and
/// closed alerts say nothing new about a commit.
fn code_scanning_alert(v: &Value) -> Result<Vec<Canonical>, MapError> {
    if !matches!(text(v, "action")?.as_str(), "created" | "reopened" | "appeared_in_branch") {
        return Ok(Vec::new());
    }
    let full_name = text(v, "repository.full_name")?;
    let number = at(v, "alert.number").map(Value::to_string).unwrap_or_default();
    let level = opt_text(v, "alert.rule.security_severity_level").unwrap_or_default();
    let error = opt_text(v, "alert.rule.severity").as_deref() == Some("error");
    let event = json!({
        "event_id": format!("github:{full_name}:code-scanning/{number}/{}", text(v, "action")?),
        "event_time": opt_text(v, "alert.updated_at").map_or_else(|| text(v, "alert.created_at"), Ok)?,
        "kind": "scan",
        "repo": full_name,
        "service": text(v, "repository.name")?,
        "commit_sha": text(v, "commit_oid")?,
        "actor": opt_text(v, "alert.tool.name"),
        "outcome": "success",
        "scan_type": "sast",
        "findings_critical": i32::from(level == "critical"),
        "findings_high": i32::from(level == "high" || (level.is_empty() && error)),
    });
    Ok(vec![canonical(event)])
}

/// The repository, the service it builds (the repository's name) and the
/// pull request's number.
fn pull(v: &Value) -> Result<(String, String, i64), MapError> {
    let number = at(v, "pull_request.number")
        .and_then(Value::as_i64)
        .ok_or_else(|| MapError::Unmappable("`pull_request.number` is missing or not a number".into()))?;
    Ok((text(v, "repository.full_name")?, text(v, "repository.name")?, number))
}

fn pull_request(v: &Value) -> Result<Vec<Canonical>, MapError> {
    let merged = at(v, "pull_request.merged").and_then(Value::as_bool).unwrap_or(false);
    if text(v, "action")? != "closed" || !merged {
        return Ok(Vec::new()); // only a merge is a CI fact Vigil uses
    }
    let (full_name, service, number) = pull(v)?;
    let event = json!({
        "event_id": format!("github:{full_name}:pull/{number}/merged"),
        "event_time": text(v, "pull_request.merged_at")?,
        "kind": "pr_merged",
        "repo": full_name,
        "service": service,
        "commit_sha": text(v, "pull_request.merge_commit_sha")?,
        "pr_number": number,
        "actor": opt_text(v, "pull_request.merged_by.login"),
        "author": text(v, "pull_request.user.login")?,
    });
    Ok(vec![canonical(event)])
}

fn review(v: &Value) -> Result<Vec<Canonical>, MapError> {
    if text(v, "action")? != "submitted" {
        return Ok(Vec::new());
    }
    let (full_name, service, number) = pull(v)?;
    let state = text(v, "review.state")?.to_lowercase();
    let review_id = at(v, "review.id").map(Value::to_string).unwrap_or_default();
    let event = json!({
        "event_id": format!("github:{full_name}:review/{review_id}"),
        "event_time": text(v, "review.submitted_at")?,
        "kind": "pr_review",
        "repo": full_name,
        "service": service,
        "commit_sha": text(v, "review.commit_id")?,
        "pr_number": number,
        "actor": text(v, "review.user.login")?,
        "author": text(v, "pull_request.user.login")?,
        "review_state": state,
    });
    Ok(vec![canonical(event)])
}
