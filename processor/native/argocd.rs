//! Argo CD notifications posted by the template in
//! deploy/argocd/vigil-notifications.yaml, onto deploy. One sync operation
//! is one deploy (its id the app and the operation's start); the notification
//! sent when it starts is `started`, the one when it ends `succeeded` or
//! `failed`. The commit is the synced revision; the artifact digest, the
//! digest of the app's image named after the service (else its first
//! pinned image); the deployer, whoever started the sync (automated syncs
//! are the pipeline's).

use serde_json::{json, Value};

use super::{at, canonical, image_digest, opt_text, text, Canonical, MapError};
use crate::schema::Topic;

/// The `source` the template writes, which tells these payloads apart.
pub(super) const SOURCE: &str = "argocd";

pub(super) fn map(topic: Topic, v: &Value) -> Result<Vec<Canonical>, MapError> {
    if topic != Topic::Deploy {
        return Err(MapError::Unmappable(format!("Argo CD notifications map onto the deploy topic, not {topic}")));
    }
    if opt_text(v, "source").as_deref() != Some(SOURCE) {
        return Err(MapError::Unmappable(format!(
            "`source` is not \"{SOURCE}\": not a notification from deploy/argocd/vigil-notifications.yaml"
        )));
    }
    let status = match text(v, "phase")?.as_str() {
        "Running" => "started",
        "Succeeded" => "succeeded",
        "Failed" | "Error" => "failed",
        _ => return Ok(Vec::new()), // Terminating: the end follows
    };
    let non_empty = |path: &str| opt_text(v, path).filter(|s| !s.is_empty() && s != "<no value>");
    let app = text(v, "app")?;
    let started = non_empty("startedAt").ok_or_else(|| MapError::Unmappable("`startedAt` is empty".into()))?;
    let time = if status == "started" { started.clone() } else { non_empty("finishedAt").unwrap_or(started.clone()) };
    let service = non_empty("service").unwrap_or_else(|| app.clone());
    let images: Vec<&str> =
        at(v, "images").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let named = images.iter().find(|i| {
        let repo = i.split('@').next().unwrap_or_default();
        let repo = repo.rsplit_once(':').filter(|(_, tag)| !tag.contains('/')).map_or(repo, |(r, _)| r);
        repo.rsplit('/').next() == Some(service.as_str())
    });
    let digest = named.and_then(|i| image_digest(i)).or_else(|| images.iter().find_map(|i| image_digest(i)));
    let automated = at(v, "automated").and_then(Value::as_bool).unwrap_or(false);
    let actor = non_empty("syncedBy").unwrap_or_else(|| "argocd".into());
    let event = json!({
        "event_id": format!("argocd:{app}:{started}:{}", text(v, "phase")?),
        "event_time": time,
        "deploy_id": format!("argocd:{app}:{started}"),
        "service": service,
        "environment": non_empty("environment")
            .ok_or_else(|| MapError::Unmappable("`environment` is empty: label the app vigil.dev/environment".into()))?,
        "commit_sha": non_empty("revision").unwrap_or_default(),
        "artifact_digest": digest,
        "actor": actor,
        "automated": automated || non_empty("syncedBy").is_none(),
        "change_id": non_empty("changeId"),
        "status": status,
    });
    Ok(vec![canonical(event)])
}
