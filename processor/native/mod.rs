//! Tool-native payloads mapped onto the canonical events.
//!
//! A mapper turns one payload (a GitHub webhook, a CDEvent, …) into zero or
//! more canonical events as JSON objects in the shape of `schemas/*.avsc`;
//! the canonical JSON decoder then checks them like any other input. Each
//! mapped event keeps the original payload's id and source in its event_id
//! (`<tool>:<source>:<id>`) for the evidence trail.
//!
//! So far: GitHub webhooks (pull_request merged, pull_request_review
//! submitted), CDEvents (service.deployed/upgraded/rolledback,
//! change.merged/reviewed, testsuiterun.finished), Jira issue webhooks and
//! ServiceNow change_request records (change requests). `vigil decode` prints what a payload maps to.

mod cdevents;
mod github;
mod jira;
mod servicenow;

use serde_json::{Map, Value};

use crate::schema::Topic;

/// The tool formats Vigil can map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NativeFormat {
    /// The canonical JSON form itself.
    Json,
    /// GitHub webhook payloads, as GitHub sends them.
    Github,
    /// CDEvents (structured CloudEvents JSON, or the bare CDEvent).
    Cdevents,
    /// Jira issue webhooks (change requests).
    Jira,
    /// ServiceNow change_request records.
    Servicenow,
}

/// Why a payload could not be mapped.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MapError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("{0}")]
    Unmappable(String),
}

/// One canonical event.
pub type Canonical = Map<String, Value>;

/// Maps `payload` to the canonical events of `topic` it carries. An empty
/// result means the payload is valid but says nothing Vigil uses (a pull
/// request opened, say).
pub fn map(format: NativeFormat, topic: Topic, payload: &[u8]) -> Result<Vec<Canonical>, MapError> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| MapError::Json(e.to_string()))?;
    match format {
        NativeFormat::Json => match value {
            Value::Object(o) => Ok(vec![o]),
            _ => Err(MapError::Unmappable("expected a JSON object".into())),
        },
        NativeFormat::Github => github::map(topic, &value),
        NativeFormat::Cdevents => cdevents::map(topic, &value),
        NativeFormat::Jira => jira::map(topic, &value),
        NativeFormat::Servicenow => servicenow::map(topic, &value),
    }
}

/// What `vigil decode` reports for one payload: the canonical events as JSON
/// lines, each checked by the canonical decoder, or why it cannot be read.
pub fn decode_payload(format: NativeFormat, topic: Topic, payload: &[u8]) -> Result<Vec<String>, String> {
    let catalog = crate::schema::Catalog::builtin()?;
    let resolver = std::sync::Arc::new(crate::decode::SchemaResolver::new(None, None)?);
    let decoder = crate::decode::Decoder::new(
        catalog.event(topic).clone(),
        resolver,
        crate::decode::Format::Json,
        crate::decode::TimeBounds::default(),
    );
    let events = map(format, topic, payload).map_err(|e| e.to_string())?;
    let mut lines = Vec::with_capacity(events.len());
    for event in events {
        let json = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
        let raw = crate::decode::RawMessage { payload: Some(&json), partition: 0, offset: 0 };
        if let Some(reject) = decoder.decode([raw], crate::pipeline::wall_ms()).rejects.into_iter().next() {
            return Err(format!("maps to an invalid {topic} event: {}", reject.error));
        }
        lines.push(String::from_utf8_lossy(&json).into_owned());
    }
    Ok(lines)
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
}
