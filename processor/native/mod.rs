//! Tool-native payloads mapped onto the canonical events.
//!
//! A mapper turns one payload (a GitHub webhook, a CDEvent, …) into zero or
//! more canonical events as JSON objects in the shape of `schemas/*.avsc`;
//! the canonical JSON decoder then checks them like any other input. Each
//! mapped event keeps the original payload's id and source in its event_id
//! (`<tool>:<source>:<id>`) for the evidence trail.
//!
//! Formats: GitHub webhooks, CDEvents (structured or binary CloudEvents, or
//! bare), Jira issue webhooks, ServiceNow change_request records, Okta System
//! Log events, Argo CD notifications (deploy/argocd/) and Kubernetes audit
//! events. What a tool's events mean for compliance (which Okta groups are
//! production access, which namespaces are production) is [`NativeConfig`].
//! `vigil decode` prints what a payload maps to.

mod argocd;
mod cdevents;
mod config;
mod github;
mod jira;
mod kubernetes;
mod okta;
mod servicenow;

use serde_json::{Map, Value};

use crate::schema::Topic;

pub use config::NativeConfig;

/// The tool formats Vigil can map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NativeFormat {
    /// GitHub webhook payloads, as GitHub sends them.
    Github,
    /// CDEvents: a CloudEvent in structured or binary mode (ce_ headers), or the bare CDEvent.
    Cdevents,
    /// Jira issue webhooks (change requests).
    Jira,
    /// ServiceNow change_request records.
    Servicenow,
    /// Okta System Log events (production access).
    Okta,
    /// Argo CD notifications from the template in deploy/argocd/.
    Argocd,
    /// Kubernetes audit events (direct changes to production workloads).
    KubernetesAudit,
}

/// Why a payload could not be mapped.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MapError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Unmappable(String),
    /// Valid, and of a kind Vigil maps, but this one can evidence nothing
    /// (e.g. a test run naming no commit): ignored and counted, with why.
    #[error("ignored: {0}")]
    Ignored(&'static str),
}

/// One canonical event.
pub type Canonical = Map<String, Value>;

/// A parsed payload and its Kafka record headers.
#[derive(Clone, Copy)]
pub struct Payload<'a> {
    pub value: &'a Value,
    pub headers: &'a [(String, Option<Vec<u8>>)],
}

impl<'a> Payload<'a> {
    /// A header's value as text (names compare case-insensitively, as HTTP
    /// bridges may change their case).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok())
    }
}

/// Maps `payload` to the canonical events of `topic` it carries. An empty
/// result means the payload is valid but says nothing Vigil uses (a pull
/// request opened, say).
pub fn map(
    format: NativeFormat,
    topic: Topic,
    payload: Payload<'_>,
    config: &NativeConfig,
) -> Result<Vec<Canonical>, MapError> {
    match format {
        NativeFormat::Github => github::map(topic, payload, &config.github),
        NativeFormat::Cdevents => cdevents::map(topic, payload),
        NativeFormat::Jira => jira::map(topic, payload.value, &config.jira),
        NativeFormat::Servicenow => servicenow::map(topic, payload.value),
        NativeFormat::Okta => okta::map(topic, payload.value, &config.okta),
        NativeFormat::Argocd => argocd::map(topic, payload.value),
        NativeFormat::KubernetesAudit => kubernetes::map(topic, payload.value, &config.kubernetes),
    }
}

/// The tool format a JSON payload is in, told by what only that tool sends;
/// `None` for anything else (read as the canonical form). This is what the
/// `auto` format does with JSON.
pub fn detect(payload: Payload<'_>) -> Option<NativeFormat> {
    let v = payload.value;
    let has = |path: &str| at(v, path).is_some();
    let text_is = |path: &str, f: &dyn Fn(&str) -> bool| at(v, path).and_then(Value::as_str).is_some_and(f);
    let cdevent = |t: &str| t.starts_with("dev.cdevents.");
    if has("event_id") && has("event_time") {
        None
    } else if payload.header("ce_type").is_some_and(cdevent)
        || text_is("type", &cdevent)
        || text_is("context.type", &cdevent)
    {
        Some(NativeFormat::Cdevents)
    } else if payload.header("x-github-event").is_some() || (has("repository") && has("sender")) {
        Some(NativeFormat::Github)
    } else if text_is("webhookEvent", &|e| {
        e.starts_with("jira:") || ["comment_", "issuelink_", "worklog_"].iter().any(|p| e.starts_with(p))
    }) || (has("webhookEvent") && has("issue.key"))
    {
        // Every Jira webhook, comment and link events too (Jira ignores
        // what is not a status change of an issue).
        Some(NativeFormat::Jira)
    } else if ["", "result.", "result.0."].iter().any(|r| has(&format!("{r}sys_id")) && has(&format!("{r}number"))) {
        Some(NativeFormat::Servicenow)
    } else if (has("uuid") && has("published") && has("eventType")) || text_is("eventType", &|t| t == okta::EVENT_HOOK)
    {
        Some(NativeFormat::Okta)
    } else if text_is("source", &|s| s == argocd::SOURCE) {
        Some(NativeFormat::Argocd)
    } else if text_is("apiVersion", &|a| a.starts_with("audit.k8s.io/"))
        || (has("auditID") && has("stage") && has("verb") && has("objectRef"))
    {
        // Shippers may drop the apiVersion and kind of each audit line.
        Some(NativeFormat::KubernetesAudit)
    } else {
        None
    }
}

/// What `vigil decode` reports for one payload: the canonical events as JSON
/// lines, each checked by the canonical decoder within `limits` (the
/// `[decode]` bounds `vigil run` applies), or why it cannot be read.
pub fn decode_payload(
    format: crate::decode::Format,
    topic: Topic,
    payload: &[u8],
    headers: &[(String, Option<Vec<u8>>)],
    config: &NativeConfig,
    limits: &crate::decode::Limits,
) -> Result<Decoded, String> {
    use crate::decode::Format;
    if payload.len() > limits.max_bytes {
        return Err(crate::decode::DecodeError::Oversize { size: payload.len(), max: limits.max_bytes }.to_string());
    }
    let catalog = crate::schema::Catalog::builtin()?;
    let resolver = std::sync::Arc::new(crate::decode::SchemaResolver::new(None, None)?);
    let decoder = crate::decode::Decoder::new(catalog.event(topic).clone(), resolver, Format::Json, limits.time);
    let value: Value = serde_json::from_slice(payload).map_err(|e| MapError::Json(e.to_string()).to_string())?;
    let parsed = Payload { value: &value, headers };
    let native = match format {
        Format::Native(n) => Some(n),
        Format::Auto => detect(parsed),
        Format::Json => None,
        Format::Avro | Format::AvroPlain => return Err("vigil decode reads JSON payloads; Avro is canonical".into()),
    };
    let events = match native.map(|n| map(n, topic, parsed, config)) {
        Some(Err(MapError::Ignored(why))) => return Ok(Decoded { lines: Vec::new(), ignored: Some(why) }),
        Some(mapped) => mapped.map_err(|e| e.to_string())?,
        None => vec![canonical(value.clone())],
    };
    let mut lines = Vec::with_capacity(events.len());
    for event in events {
        let json = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
        let raw = crate::decode::RawMessage::new(Some(&json), 0, 0);
        if let Some(reject) = decoder.decode([raw], crate::pipeline::wall_ms()).rejects.into_iter().next() {
            return Err(format!("maps to an invalid {topic} event: {}", reject.error));
        }
        lines.push(String::from_utf8_lossy(&json).into_owned());
    }
    Ok(Decoded { lines, ignored: None })
}

/// What `vigil decode` prints for a payload: its canonical events as JSON
/// lines; none, and why, when it is ignored for a reason.
pub struct Decoded {
    pub lines: Vec<String>,
    pub ignored: Option<&'static str>,
}

/// A JSON object without its null fields (absent is how the canonical form
/// says "none").
pub(crate) fn canonical(v: Value) -> Canonical {
    match v {
        Value::Object(mut o) => {
            o.retain(|_, v| !v.is_null());
            o
        }
        _ => Canonical::new(),
    }
}

/// A required string at `path` (e.g. `pull_request.user.login`).
pub(crate) fn text(value: &Value, path: &str) -> Result<String, MapError> {
    opt_text(value, path).ok_or_else(|| MapError::Unmappable(format!("`{path}` is missing or not a string")))
}

pub(crate) fn opt_text(value: &Value, path: &str) -> Option<String> {
    at(value, path).and_then(Value::as_str).map(str::to_string)
}

/// The value at a dotted path; a numeric segment indexes an array.
pub(crate) fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| match (v, key.parse::<usize>()) {
        (Value::Array(items), Ok(i)) => items.get(i),
        _ => v.get(key),
    })
}

/// The sha256 digest in an image reference (`repo@sha256:…`), if it has one.
pub(crate) fn image_digest(image: &str) -> Option<String> {
    let (_, digest) = image.rsplit_once('@')?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{}", hex.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let v: Value = serde_json::from_str(r#"{"a": {"b": "c"}}"#).unwrap();
        assert_eq!(text(&v, "a.b").unwrap(), "c");
        assert!(text(&v, "a.x").unwrap_err().to_string().contains("a.x"));
        let v: Value = serde_json::from_str(r#"{"a": [{"b": "c"}]}"#).unwrap();
        assert_eq!(text(&v, "a.0.b").unwrap(), "c");
    }

    #[test]
    fn image_digests() {
        let hex = "ab".repeat(32);
        assert_eq!(image_digest(&format!("ghcr.io/acme/pay@sha256:{hex}")), Some(format!("sha256:{hex}")));
        assert_eq!(image_digest("ghcr.io/acme/pay:1.2"), None);
        assert_eq!(image_digest("ghcr.io/acme/pay@sha256:abc"), None);
    }
}
