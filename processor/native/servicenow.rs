//! ServiceNow change_request records, as a business rule or outbound REST
//! message sends them, or as the Table API returns them (a snapshot of the
//! record after each update). The record's state and approval say what
//! happened: canceled → cancelled, closed → closed, implement/review →
//! implemented, approval approved/rejected → approved/rejected, otherwise
//! created. The planned start and end dates are the approved change window.
//!
//! The Table API's shapes are all read: flat strings (a reference as its
//! sys_id), `{"link", "value"}` for a reference, `{"display_value",
//! "value"}` for every field with `sysparm_display_value=all`, and a
//! `result` envelope holding one record or a list of them (one row each).
//! A reference is read by its display value (the service's or person's
//! name), any other field by its value (choice codes, UTC dates). An empty
//! field (`""`, as an unset reference is sent) counts as absent, so an empty
//! `business_service` does not hide a filled `cmdb_ci`. Dates sent only as
//! display values (`sysparm_display_value=true`) are in the asking user's
//! time zone, which the record does not say: such a record is refused.

use serde_json::{json, Value};

use super::{canonical, Canonical, MapError};
use crate::schema::Topic;

pub(super) fn map(topic: Topic, v: &Value) -> Result<Vec<Canonical>, MapError> {
    if topic != Topic::Change {
        return Err(MapError::Unmappable(format!(
            "ServiceNow change_request records map onto the change topic, not {topic}"
        )));
    }
    match v.get("result") {
        Some(Value::Array(records)) => records
            .iter()
            .enumerate()
            .map(|(i, r)| record(r).map_err(|e| MapError::Unmappable(format!("result[{i}]: {e}"))))
            .collect(),
        Some(one) if one.is_object() => Ok(vec![record(one)?]),
        _ => Ok(vec![record(v)?]),
    }
}

/// Whether a field is read by its display value (a reference) or its value.
#[derive(Clone, Copy, PartialEq)]
enum Read {
    Display,
    Value,
}

/// One field as text, whichever shape it came in; `None` when absent or
/// empty.
fn field(v: &Value, key: &str, read: Read) -> Option<String> {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    match v.get(key)? {
        Value::Object(o) => {
            let (display, value) = (text(o.get("display_value")), text(o.get("value")));
            match read {
                Read::Display => display.or(value),
                Read::Value => value.or(display),
            }
        }
        other => text(Some(other)),
    }
}

/// A reference by its display value. One sent as `{"link", "value"}` alone
/// names only a sys_id, which no deploy or person matches: refused, saying
/// how to ask for names.
fn reference(v: &Value, number: &str, key: &str) -> Result<Option<String>, MapError> {
    let unnamed = v.get(key).is_some_and(|f| f.get("link").is_some() && f.get("display_value").is_none());
    match field(v, key, Read::Display) {
        Some(sys_id) if unnamed => Err(MapError::Unmappable(format!(
            "{number}: `{key}` is a reference to sys_id {sys_id} without its name; \
             ask the Table API with sysparm_display_value=all"
        ))),
        named => Ok(named),
    }
}

fn required(v: &Value, key: &str, read: Read) -> Result<String, MapError> {
    field(v, key, read).ok_or_else(|| MapError::Unmappable(format!("`{key}` is missing or empty")))
}

/// Whether the record carries display values only: a reference sent as
/// `{"display_value", "link"}` without its `value`.
fn display_only(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.values().any(|f| f.get("display_value").is_some() && f.get("link").is_some() && f.get("value").is_none())
    })
}

fn record(v: &Value) -> Result<Canonical, MapError> {
    if !v.is_object() {
        return Err(MapError::Unmappable("a change_request record is a JSON object".into()));
    }
    let number = required(v, "number", Read::Value)?;
    let state = field(v, "state", Read::Value).unwrap_or_default().to_lowercase();
    let approval = field(v, "approval", Read::Value).unwrap_or_default().to_lowercase();
    let action = match (state.as_str(), approval.as_str()) {
        ("4" | "canceled" | "cancelled", _) => "cancelled",
        ("3" | "closed", _) => "closed",
        ("-1" | "0" | "implement" | "review", _) => "implemented",
        (_, "approved") => "approved",
        (_, "rejected") => "rejected",
        _ => "created",
    };
    let service = match reference(v, &number, "business_service")? {
        Some(service) => Some(service),
        None => reference(v, &number, "cmdb_ci")?,
    };
    let service =
        service.ok_or_else(|| MapError::Unmappable(format!("{number} names no business_service or cmdb_ci")))?;
    let change_type = match field(v, "type", Read::Value).unwrap_or_default().to_lowercase().as_str() {
        "emergency" => "emergency",
        "standard" => "standard",
        _ => "normal",
    };
    let display_only = display_only(v);
    let time = |key: &str| -> Result<Option<String>, MapError> {
        let Some(raw) = v.get(key) else { return Ok(None) };
        let sent_as_value = raw.is_string() || raw.get("value").is_some();
        let Some(text) = field(v, key, Read::Value) else { return Ok(None) };
        if display_only || !sent_as_value {
            return Err(MapError::Unmappable(format!(
                "{number}: `{key}` is a display value, in the asking user's time zone; \
                 ask the Table API with sysparm_display_value=all (or false)"
            )));
        }
        servicenow_time(&text).map(Some)
    };
    let updated = time("sys_updated_on")?.ok_or_else(|| MapError::Unmappable("`sys_updated_on` is missing".into()))?;
    let version = field(v, "sys_mod_count", Read::Value).unwrap_or_else(|| updated.clone());
    let id = field(v, "sys_id", Read::Value).unwrap_or_else(|| number.clone());
    Ok(canonical(json!({
        "event_id": format!("servicenow:{id}:{version}"),
        "event_time": updated,
        "change_id": number,
        "service": service,
        "action": action,
        "actor": required(v, "sys_updated_by", Read::Value)?,
        "requester": reference(v, &number, "requested_by")?,
        "change_type": change_type,
        "window_start": time("start_date")?,
        "window_end": time("end_date")?,
    })))
}

/// ServiceNow writes `2026-11-20 10:00:00` (UTC); RFC 3339 passes through.
fn servicenow_time(s: &str) -> Result<String, MapError> {
    if chrono::DateTime::parse_from_rfc3339(s).is_ok() {
        return Ok(s.to_string());
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
        .map(|t| t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .map_err(|_| MapError::Unmappable(format!("`{s}` is not a ServiceNow date-time (YYYY-MM-DD HH:MM:SS, UTC)")))
}
