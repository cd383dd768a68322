//! ServiceNow change_request records, as a business rule or outbound REST
//! message sends them (a snapshot of the record after each update; values
//! may be raw or display values). The record's state and approval say what
//! happened: canceled → cancelled, closed → closed, implement/review →
//! implemented, approval approved/rejected → approved/rejected, otherwise
//! created. The planned start and end dates are the approved change window.

use serde_json::{json, Value};

use super::{canonical, opt_text, text, Canonical, MapError};
use crate::schema::Topic;

pub(super) fn map(topic: Topic, v: &Value) -> Result<Vec<Canonical>, MapError> {
    if topic != Topic::Change {
        return Err(MapError::Unmappable(format!(
            "ServiceNow change_request records map onto the change topic, not {topic}"
        )));
    }
    let number = text(v, "number")?;
    let state = opt_text(v, "state").unwrap_or_default().to_lowercase();
    let approval = opt_text(v, "approval").unwrap_or_default().to_lowercase();
    let action = match (state.as_str(), approval.as_str()) {
        ("4" | "canceled" | "cancelled", _) => "cancelled",
        ("3" | "closed", _) => "closed",
        ("-1" | "0" | "implement" | "review", _) => "implemented",
        (_, "approved") => "approved",
        (_, "rejected") => "rejected",
        _ => "created",
    };
    let service = opt_text(v, "business_service")
        .or_else(|| opt_text(v, "cmdb_ci"))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| MapError::Unmappable(format!("{number} names no business_service or cmdb_ci")))?;
    let change_type = match opt_text(v, "type").unwrap_or_default().to_lowercase().as_str() {
        "emergency" => "emergency",
        "standard" => "standard",
        _ => "normal",
    };
    let time = |key: &str| opt_text(v, key).filter(|s| !s.is_empty()).map(|s| servicenow_time(&s)).transpose();
    let updated = time("sys_updated_on")?.ok_or_else(|| MapError::Unmappable("`sys_updated_on` is missing".into()))?;
    let version = opt_text(v, "sys_mod_count").unwrap_or_else(|| updated.clone());
    Ok(vec![canonical(json!({
        "event_id": format!("servicenow:{}:{version}", opt_text(v, "sys_id").unwrap_or_else(|| number.clone())),
        "event_time": updated,
        "change_id": number,
        "service": service,
        "action": action,
        "actor": text(v, "sys_updated_by")?,
        "requester": opt_text(v, "requested_by"),
        "change_type": change_type,
        "window_start": time("start_date")?,
        "window_end": time("end_date")?,
    }))])
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
