//! GitHub webhooks, exactly as GitHub sends them. Without the
//! X-GitHub-Event header (a payload read from a file), the event is told by
//! its shape: `review` → pull_request_review, `pull_request` → pull_request,
//! `alert` → code_scanning_alert (onto ci), `deployment_status` →
//! deployment_status (onto deploy).

use serde_json::{json, Value};

use super::{at, canonical, opt_text, text, Canonical, MapError};
use crate::schema::Topic;

pub(super) fn map(topic: Topic, v: &Value) -> Result<Vec<Canonical>, MapError> {
    match topic {
        Topic::Deploy if at(v, "deployment_status").is_some() => deployment_status(v),
        Topic::Ci if at(v, "review").is_some() && at(v, "pull_request").is_some() => review(v),
        Topic::Ci if at(v, "pull_request").is_some() => pull_request(v),
        Topic::Ci if at(v, "alert").is_some() && at(v, "commit_oid").is_some() => code_scanning_alert(v),
        Topic::Ci => {
            Err(MapError::Unmappable("not a pull_request, pull_request_review or code_scanning_alert webhook".into()))
        }
        Topic::Deploy => Err(MapError::Unmappable("not a deployment_status webhook".into())),
        _ => Err(MapError::Unmappable(format!("GitHub webhooks map onto the ci and deploy topics, not {topic}"))),
    }
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
    let deployment = at(v, "deployment.id").map(Value::to_string).unwrap_or_default();
    let status_id = at(v, "deployment_status.id").map(Value::to_string).unwrap_or_default();
    let environment =
        opt_text(v, "deployment_status.environment").map_or_else(|| text(v, "deployment.environment"), Ok)?;
    let event = json!({
        "event_id": format!("github:{full_name}:deployment_status/{status_id}"),
        "event_time": text(v, "deployment_status.created_at")?,
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
