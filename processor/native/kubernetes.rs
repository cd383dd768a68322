//! Kubernetes audit events (audit.k8s.io/v1) onto deploy: a workload in a
//! production namespace created, updated or patched by someone other than
//! the pipeline — a "shadow deploy", a change to production with no
//! pipeline behind it. Config (`[native.kubernetes]`) says which namespaces
//! are which environment and which users are the pipeline (whose deploys
//! the pipeline reports itself). Only completed, successful, non-dry-run
//! requests on the workload itself (not a subresource such as status or
//! scale) count; everything else changed no code in production.
//!
//! The deploy names no commit (none is known: that is the point) and is
//! not automated; the artifact digest is the first pinned image in the
//! request, if any.

use serde_json::{json, Value};

use super::config::KubernetesConfig;
use super::{at, canonical, image_digest, opt_text, text, Canonical, MapError};
use crate::schema::Topic;

pub(super) fn map(topic: Topic, v: &Value, config: &KubernetesConfig) -> Result<Vec<Canonical>, MapError> {
    if topic != Topic::Deploy {
        return Err(MapError::Unmappable(format!("Kubernetes audit events map onto the deploy topic, not {topic}")));
    }
    // A shipper may drop `kind` (and `apiVersion`) from each line.
    let kind = opt_text(v, "kind").unwrap_or_else(|| "Event".into());
    if kind != "Event" {
        return Err(MapError::Unmappable(format!(
            "kind `{kind}` is not an audit Event (an EventList is split by the shipper)"
        )));
    }
    let user = text(v, "user.username")?;
    let resource = opt_text(v, "objectRef.resource").unwrap_or_default();
    let namespace = opt_text(v, "objectRef.namespace").unwrap_or_default();
    let code = at(v, "responseStatus.code").and_then(Value::as_i64).unwrap_or(0);
    let dry_run = opt_text(v, "requestURI").is_some_and(|u| u.contains("dryRun="));
    let environment = config.namespaces.get(&namespace);
    let relevant = opt_text(v, "stage").as_deref() == Some("ResponseComplete")
        && matches!(text(v, "verb")?.as_str(), "create" | "update" | "patch")
        && config.resources.contains(&resource)
        && at(v, "objectRef.subresource").is_none()
        && (200..300).contains(&code)
        && !dry_run
        && !config.pipeline_users.contains(&user);
    let (true, Some(environment)) = (relevant, environment) else { return Ok(Vec::new()) };
    let name = text(v, "objectRef.name")
        .or_else(|_| text(v, "responseObject.metadata.name"))
        .or_else(|_| text(v, "requestObject.metadata.name"))?;
    let service = ["requestObject", "responseObject"]
        .iter()
        .find_map(|o| at(v, &format!("{o}.metadata.labels"))?.get("app.kubernetes.io/name")?.as_str())
        .map(str::to_string)
        .unwrap_or(name);
    let mut images = Vec::new();
    if let Some(object) = at(v, "requestObject") {
        collect_images(object, &mut images);
    }
    let audit_id = text(v, "auditID")?;
    let event = json!({
        "event_id": format!("k8s-audit:{audit_id}"),
        "event_time": opt_text(v, "stageTimestamp").map_or_else(|| text(v, "requestReceivedTimestamp"), Ok)?,
        "deploy_id": format!("k8s-audit:{namespace}/{resource}/{}:{audit_id}", text(v, "objectRef.name").unwrap_or_default()),
        "service": service,
        "environment": environment,
        "commit_sha": "",
        "artifact_digest": images.iter().find_map(|i| image_digest(i)),
        "actor": user,
        "automated": false,
        "status": "succeeded",
    });
    Ok(vec![canonical(event)])
}

/// Every `image` string anywhere in `v` (containers, init containers, …).
fn collect_images<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                match v {
                    Value::String(s) if k == "image" => out.push(s),
                    _ => collect_images(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_images(i, out)),
        _ => {}
    }
}
