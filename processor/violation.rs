//! The violation record: its deterministic id and its encodings.

use apache_avro::types::Value;
use apache_avro::Schema as AvroSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::controls::{Control, Finding};

/// The id of a violation: the first 32 hex digits of sha-256 over the
/// control id, a NUL byte and the subject. The generator computes ground
/// truth with this same function.
pub fn violation_id(control_id: &str, subject: &str) -> String {
    let mut h = Sha256::new();
    h.update(control_id.as_bytes());
    h.update([0u8]);
    h.update(subject.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Schema id of `schemas/violation.avsc` in `schemas/ids.toml`.
pub const VIOLATION_SCHEMA_ID: u32 = 5;

/// A violation as published on the violations topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub id: String,
    pub control_id: String,
    pub control_version: String,
    pub severity: String,
    pub title: String,
    pub service: String,
    pub subject: String,
    pub event_time: i64,
    pub detected_at: i64,
    pub late: bool,
    pub message: String,
    pub evidence: Vec<String>,
    pub frameworks: Vec<String>,
    /// `open`, or `retracted` by a late event (an amendment).
    #[serde(default = "open")]
    pub status: String,
}

fn open() -> String {
    "open".into()
}

impl Violation {
    pub fn new(control: &Control, finding: Finding, detected_at: i64) -> Violation {
        let meta = &control.meta;
        let frameworks = [
            meta.domain.as_ref().map(|d| format!("SOX ITGC: {d}")),
            meta.coso.as_ref().map(|c| format!("COSO 2013: {c}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        Violation {
            id: violation_id(&meta.id, &finding.subject),
            control_id: meta.id.clone(),
            control_version: control.version.clone(),
            severity: meta.severity.name().to_string(),
            title: meta.title.clone(),
            service: finding.service,
            subject: finding.subject,
            event_time: finding.event_time_ms,
            detected_at,
            late: finding.late,
            message: finding.message,
            evidence: finding.evidence,
            frameworks,
            status: open(),
        }
    }

    /// The amendment that retracts the violation `finding` was, because of
    /// the late events in `late_evidence`.
    pub fn retraction(control: &Control, finding: Finding, detected_at: i64, late_evidence: &[String]) -> Violation {
        let mut v = Violation::new(control, finding, detected_at);
        v.message = format!(
            "retracted: late event(s) {} changed the decision; it was: {}",
            late_evidence.join(", "),
            v.message
        );
        v.evidence.extend(late_evidence.iter().cloned());
        v.late = true;
        v.status = "retracted".into();
        v
    }

    /// The Avro datum (no framing) in `schemas/violation.avsc`.
    pub fn to_avro(&self, schema: &AvroSchema) -> Result<Vec<u8>, apache_avro::Error> {
        let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
        let severity_index =
            ["info", "low", "medium", "high", "critical"].iter().position(|s| *s == self.severity).unwrap_or(0) as u32;
        let record = Value::Record(vec![
            ("id".into(), Value::String(self.id.clone())),
            ("control_id".into(), Value::String(self.control_id.clone())),
            ("control_version".into(), Value::String(self.control_version.clone())),
            ("severity".into(), Value::Enum(severity_index, self.severity.clone())),
            ("title".into(), Value::String(self.title.clone())),
            ("service".into(), Value::String(self.service.clone())),
            ("subject".into(), Value::String(self.subject.clone())),
            ("event_time".into(), Value::TimestampMillis(self.event_time)),
            ("detected_at".into(), Value::TimestampMillis(self.detected_at)),
            ("late".into(), Value::Boolean(self.late)),
            ("message".into(), Value::String(self.message.clone())),
            ("evidence".into(), strings(&self.evidence)),
            ("frameworks".into(), strings(&self.frameworks)),
            ("status".into(), Value::Enum(u32::from(self.status == "retracted"), self.status.clone())),
        ]);
        apache_avro::to_avro_datum(schema, record)
    }

    /// Reads a violation back from its Confluent-framed Avro form.
    pub fn from_confluent_avro(schema: &AvroSchema, bytes: &[u8]) -> Result<Violation, String> {
        if bytes.len() < 5 || bytes[0] != 0 {
            return Err("not a Confluent-framed Avro message".into());
        }
        let value = apache_avro::from_avro_datum(schema, &mut &bytes[5..], None).map_err(|e| e.to_string())?;
        apache_avro::from_value::<Violation>(&value).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_deterministic_and_separates_fields() {
        assert_eq!(violation_id("CM-01", "d-1"), violation_id("CM-01", "d-1"));
        assert_ne!(violation_id("CM-01", "d-1"), violation_id("CM-0", "1d-1"));
        assert_eq!(violation_id("CM-01", "d-1").len(), 32);
    }
}
