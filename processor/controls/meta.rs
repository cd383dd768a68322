//! The metadata header of a control file.
//!
//! A control is a SQL file whose first lines are `-- key: value` comments:
//!
//! ```sql
//! -- id: CM-01
//! -- title: Production deploy without an approved change request
//! -- severity: high
//! -- trigger: deploy
//! -- filter: environment = 'production' AND status = 'succeeded'
//! -- grace: 15m
//! -- lookback: 30d
//! SELECT ...
//! ```
//!
//! Required: id, title, severity, trigger. `filter` is a SQL predicate over the
//! trigger topic that selects the rows the control decides; `grace` is how
//! long after a trigger's event time to wait for context; `lookback` is how
//! far back before it the query looks (it sets state retention).

use std::fmt;
use std::time::Duration;

use crate::duration;
use crate::schema::Topic;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] =
        [Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A control's header, validated.
#[derive(Clone, Debug)]
pub struct ControlMeta {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub trigger: Topic,
    pub filter: Option<String>,
    pub grace: Duration,
    pub lookback: Duration,
    pub domain: Option<String>,
    pub coso: Option<String>,
    pub remediation: Option<String>,
}

const KEYS: &[&str] =
    &["id", "title", "severity", "trigger", "filter", "grace", "lookback", "domain", "coso", "remediation"];

/// Parses the header of `sql`. Errors carry the 1-based line they refer to.
pub fn parse(sql: &str) -> Result<ControlMeta, (usize, String)> {
    let mut fields: Vec<(&str, String, usize)> = Vec::new();
    for (i, line) in sql.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let Some(comment) = trimmed.strip_prefix("--") else { break };
        let Some((key, value)) = comment.split_once(':') else { continue };
        let key = key.trim();
        if !KEYS.contains(&key) {
            return Err((line_no, format!("unknown header key `{key}`; known keys: {}", KEYS.join(", "))));
        }
        if fields.iter().any(|(k, _, _)| *k == key) {
            return Err((line_no, format!("header key `{key}` given twice")));
        }
        fields.push((KEYS[KEYS.iter().position(|k| *k == key).unwrap_or(0)], value.trim().to_string(), line_no));
    }
    let get = |key: &str| fields.iter().find(|(k, _, _)| *k == key).map(|(_, v, l)| (v.clone(), *l));
    let require = |key: &str| {
        get(key).ok_or_else(|| {
            (1, format!("header lacks `-- {key}: …`; every control needs id, title, severity and trigger"))
        })
    };
    let (id, _) = require("id")?;
    let (title, _) = require("title")?;
    let (severity_text, severity_line) = require("severity")?;
    let severity = Severity::ALL.into_iter().find(|s| s.name() == severity_text).ok_or_else(|| {
        (severity_line, format!("severity `{severity_text}` is not one of info, low, medium, high, critical"))
    })?;
    let (trigger_text, trigger_line) = require("trigger")?;
    let trigger = Topic::from_name(&trigger_text).ok_or_else(|| {
        (trigger_line, format!("trigger `{trigger_text}` is not a topic; use change, ci, access or deploy"))
    })?;
    let duration_of = |key: &str| -> Result<Duration, (usize, String)> {
        match get(key) {
            Some((text, line)) => duration::parse(&text).map_err(|e| (line, format!("{key}: {e}"))),
            None => Ok(Duration::ZERO),
        }
    };
    Ok(ControlMeta {
        id,
        title,
        severity,
        trigger,
        filter: get("filter").map(|(v, _)| v),
        grace: duration_of("grace")?,
        lookback: duration_of("lookback")?,
        domain: get("domain").map(|(v, _)| v),
        coso: get("coso").map(|(v, _)| v),
        remediation: get("remediation").map(|(v, _)| v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_header() {
        let meta =
            parse("-- id: X-1\n-- title: T\n-- severity: high\n-- trigger: deploy\n-- grace: 15m\nSELECT 1").unwrap();
        assert_eq!(meta.id, "X-1");
        assert_eq!(meta.severity, Severity::High);
        assert_eq!(meta.trigger, Topic::Deploy);
        assert_eq!(meta.grace, Duration::from_secs(900));
    }

    #[test]
    fn unknown_key_names_its_line() {
        let err = parse("-- id: X\n-- colour: red\nSELECT 1").unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("colour"));
    }

    #[test]
    fn missing_trigger_is_an_error() {
        let err = parse("-- id: X\n-- title: T\n-- severity: low\nSELECT 1").unwrap_err();
        assert!(err.1.contains("trigger"));
    }
}
