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
//! trigger topic that selects the rows the control decides. A look-back
//! control names a `grace`: how long after a trigger's event time to wait for
//! late context. An absence control names a `deadline` instead: the expected
//! event must arrive within it, and the decision is made when the watermark
//! passes trigger time + deadline. `lookback` is how far back before the
//! trigger the query looks (it sets state retention). `violates` says in
//! prose what the control flags; it goes into the controls reference.

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
    /// Look-back controls: how long to wait for late context.
    pub grace: Duration,
    /// Absence controls: how long the expected event has to arrive.
    pub deadline: Option<Duration>,
    pub lookback: Duration,
    pub violates: Option<String>,
    pub domain: Option<String>,
    pub coso: Option<String>,
    pub remediation: Option<String>,
    /// `-- record: evidence`: the query writes evidence records, not violations.
    pub evidence: bool,
}

impl ControlMeta {
    /// How long after a trigger's event time its decision is due.
    pub fn wait(&self) -> Duration {
        self.deadline.unwrap_or(self.grace)
    }

    /// `absence` for controls with a deadline, `look-back` otherwise.
    pub fn kind(&self) -> &'static str {
        if self.deadline.is_some() {
            "absence"
        } else {
            "look-back"
        }
    }
}

const KEYS: &[&str] = &[
    "id",
    "title",
    "severity",
    "trigger",
    "filter",
    "grace",
    "deadline",
    "lookback",
    "domain",
    "coso",
    "violates",
    "remediation",
    "record",
];

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
        if key.is_empty() || key.contains(char::is_whitespace) {
            continue; // prose, not a `-- key: value` line
        }
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
    let evidence = match get("record") {
        None => false,
        Some((r, _)) if r == "evidence" => true,
        Some((r, line)) => return Err((line, format!("record `{r}`: the only kind is `evidence`"))),
    };
    if let (Some(_), Some((_, line))) = (get("grace"), get("deadline")) {
        return Err((line, "a control has a grace (look-back) or a deadline (absence), not both".to_string()));
    }
    Ok(ControlMeta {
        id,
        title,
        severity,
        trigger,
        filter: get("filter").map(|(v, _)| v),
        grace: duration_of("grace")?,
        deadline: get("deadline").map(|_| duration_of("deadline")).transpose()?,
        lookback: duration_of("lookback")?,
        violates: get("violates").map(|(v, _)| v),
        domain: get("domain").map(|(v, _)| v),
        coso: get("coso").map(|(v, _)| v),
        remediation: get("remediation").map(|(v, _)| v),
        evidence,
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
    fn deadline_makes_an_absence_control() {
        let meta =
            parse("-- id: A\n-- title: T\n-- severity: low\n-- trigger: access\n-- deadline: 4h\nSELECT 1").unwrap();
        assert_eq!(meta.kind(), "absence");
        assert_eq!(meta.wait(), Duration::from_secs(4 * 3600));
        let err = parse("-- id: A\n-- title: T\n-- severity: low\n-- trigger: access\n-- grace: 1m\n-- deadline: 4h\n")
            .unwrap_err();
        assert_eq!(err.0, 6);
    }

    #[test]
    fn missing_trigger_is_an_error() {
        let err = parse("-- id: X\n-- title: T\n-- severity: low\nSELECT 1").unwrap_err();
        assert!(err.1.contains("trigger"));
    }
}
