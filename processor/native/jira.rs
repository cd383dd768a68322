//! Jira webhooks for change requests. `jira:issue_created` is a change
//! created; `jira:issue_updated` with a status transition in its changelog
//! is approved / rejected / implemented / closed / cancelled, and the
//! webhook's `user` (who made the transition) is the actor — the approver
//! for an approval. The service is the issue's first component, else its
//! first label, else what `[native.jira] projects` gives its project; an
//! issue none of them names is refused, saying which setting to add. The
//! change type comes from the issue type's name
//! ("Emergency Change", "Standard Change", otherwise normal).

use serde_json::{json, Value};

use super::config::JiraConfig;
use super::{at, canonical, opt_text, text, Canonical, MapError};
use crate::schema::Topic;

pub(super) fn map(topic: Topic, v: &Value, config: &JiraConfig) -> Result<Vec<Canonical>, MapError> {
    if topic != Topic::Change {
        return Err(MapError::Unmappable(format!("Jira issue webhooks map onto the change topic, not {topic}")));
    }
    let event = text(v, "webhookEvent")?;
    let action = match event.as_str() {
        "jira:issue_created" => Some("created".to_string()),
        "jira:issue_updated" => transition(v),
        _ => return Ok(Vec::new()),
    };
    let Some(action) = action else { return Ok(Vec::new()) }; // an edit, not a status change
    let key = text(v, "issue.key")?;
    // The project: its key, else the issue key's prefix (`PAY-12`).
    let project = opt_text(v, "issue.fields.project.key")
        .or_else(|| key.rsplit_once('-').map(|(p, _)| p.to_string()))
        .unwrap_or_default();
    let named = |path: &str| at(v, path).and_then(Value::as_str).filter(|s| !s.trim().is_empty()).map(str::to_string);
    let service = named("issue.fields.components.0.name")
        .or_else(|| named("issue.fields.labels.0"))
        .or_else(|| config.projects.get(&project).cloned())
        .ok_or_else(|| {
            MapError::Unmappable(format!(
                "issue {key} names no component or label for its service, and project `{project}` has no service \
                 in the config; add it: [native.jira] projects = {{ {project} = \"<service>\" }}"
            ))
        })?;
    let time = at(v, "timestamp")
        .and_then(Value::as_i64)
        .ok_or_else(|| MapError::Unmappable("`timestamp` is missing or not epoch milliseconds".into()))?;
    let person =
        |path: &str| opt_text(v, &format!("{path}.emailAddress")).or_else(|| opt_text(v, &format!("{path}.name")));
    let issue_type = opt_text(v, "issue.fields.issuetype.name").unwrap_or_default().to_lowercase();
    let change_type = if issue_type.contains("emergency") {
        "emergency"
    } else if issue_type.contains("standard") {
        "standard"
    } else {
        "normal"
    };
    let changelog = opt_text(v, "changelog.id").unwrap_or_else(|| time.to_string());
    Ok(vec![canonical(json!({
        "event_id": format!("jira:{key}:{changelog}:{action}"),
        "event_time": time,
        "change_id": key,
        "service": service,
        "action": action,
        "actor": person("user").ok_or_else(|| MapError::Unmappable("the webhook names no `user`".into()))?,
        "requester": person("issue.fields.reporter"),
        "change_type": change_type,
    }))])
}

/// The canonical action of the changelog's status transition, if any.
fn transition(v: &Value) -> Option<String> {
    let items = at(v, "changelog.items")?.as_array()?;
    let status = items.iter().find(|i| i.get("field").and_then(Value::as_str) == Some("status"))?;
    let to = status.get("toString")?.as_str()?.to_lowercase();
    let action = match to.as_str() {
        "approved" | "authorized" | "authorised" | "scheduled" => "approved",
        "rejected" | "declined" => "rejected",
        "implemented" | "done" | "deployed" => "implemented",
        "closed" | "resolved" => "closed",
        "cancelled" | "canceled" => "cancelled",
        _ => return None,
    };
    Some(action.to_string())
}
