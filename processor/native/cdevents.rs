//! CDEvents (<https://cdevents.dev>): the bare event (`context` + `subject`)
//! or a structured-mode CloudEvent whose `data` is one. `customData` carries
//! what CDEvents lacks (commit, actor, reviewer, approver). Mapped:
//! service.deployed/upgraded/rolledback onto deploy; change.merged/reviewed
//! and testsuiterun.finished onto ci.

use serde_json::{json, Value};

use super::{at, canonical, opt_text, text, Canonical, MapError};
use crate::schema::Topic;

pub(super) fn map(topic: Topic, v: &Value) -> Result<Vec<Canonical>, MapError> {
    // Structured mode: the CloudEvent's data is the CDEvent.
    let event = if at(v, "context").is_some() { v } else { at(v, "data").unwrap_or(v) };
    let kind = text(event, "context.type")?;
    let Some(rest) = kind.strip_prefix("dev.cdevents.") else {
        return Err(MapError::Unmappable(format!("context.type `{kind}` is not a CDEvents type")));
    };
    let mut parts = rest.split('.');
    let (subject, predicate) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let id = format!("cdevents:{}:{}", text(event, "context.source")?, text(event, "context.id")?);
    let time = text(event, "context.timestamp")?;
    let custom = |key: &str| opt_text(event, &format!("customData.{key}"));
    match (topic, subject, predicate) {
        (Topic::Deploy, "service", "deployed" | "upgraded" | "rolledback") => {
            let service = text(event, "subject.id")?;
            let artifact = opt_text(event, "subject.content.artifactId");
            let digest = artifact.as_deref().map(purl_digest).transpose()?;
            let actor = custom("actor");
            let status = if predicate == "rolledback" { "rolled_back" } else { "succeeded" };
            Ok(vec![canonical(json!({
                "event_id": id,
                "event_time": time,
                "deploy_id": custom("deploy_id").unwrap_or_else(|| text(event, "context.id").unwrap_or_default()),
                "service": service,
                "environment": text(event, "subject.content.environment.id")?,
                // A deploy whose commit is unknown cannot be evidenced; the
                // commit-based controls will say so.
                "commit_sha": custom("commit_sha").unwrap_or_default(),
                "artifact_digest": digest,
                "automated": actor.is_none() || custom("automated").is_some_and(|a| a == "true"),
                "actor": actor.unwrap_or_else(|| text(event, "context.source").unwrap_or_default()),
                "change_id": custom("change_id"),
                "status": status,
            }))])
        }
        (Topic::Ci, "change", "merged" | "reviewed") => {
            let repo = text(event, "subject.content.repository.id")?;
            let service = repo.rsplit('/').next().unwrap_or(&repo).to_string();
            Ok(vec![canonical(json!({
                "event_id": id,
                "event_time": time,
                "kind": if predicate == "merged" { "pr_merged" } else { "pr_review" },
                "repo": repo,
                "service": service,
                "commit_sha": custom("commit_sha").unwrap_or_default(),
                "pr_number": custom("pr_number").and_then(|n| n.parse::<i64>().ok()),
                "actor": custom("actor"),
                "author": custom("author"),
                "review_state": (predicate == "reviewed").then(|| custom("review_state").unwrap_or_else(|| "approved".into())),
            }))])
        }
        (Topic::Ci, "testsuiterun", "finished") => {
            let commit = custom("commit_sha").ok_or_else(|| {
                MapError::Unmappable(
                    "customData.commit_sha is missing: a test run that names no commit cannot evidence a deploy".into(),
                )
            })?;
            let outcome = match text(event, "subject.content.outcome")?.as_str() {
                "pass" => "success",
                "fail" => "failure",
                "cancel" => "cancelled",
                _ => "error",
            };
            let service =
                custom("service").unwrap_or_else(|| text(event, "subject.content.testSuite.name").unwrap_or_default());
            Ok(vec![canonical(json!({
                "event_id": id,
                "event_time": time,
                "kind": "test",
                "repo": custom("repo").unwrap_or_else(|| service.clone()),
                "service": service,
                "commit_sha": commit,
                "actor": text(event, "context.source")?,
                "outcome": outcome,
                "pipeline_run_id": text(event, "subject.id")?,
            }))])
        }
        _ => Err(MapError::Unmappable(format!("CDEvent `{kind}` does not map onto the {topic} topic"))),
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
    }
}
