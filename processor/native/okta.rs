//! Okta System Log events onto access. Which grants are production access
//! is config (`[native.okta]`): a membership of a listed group or an
//! assignment to a listed app is granted / revoked; of an elevated group,
//! elevated / revoked; an administrator role grant (when admin_privileges)
//! is granted / revoked with the role `okta-admin: <roles>`. Anything else,
//! and any event whose outcome is not SUCCESS, changed no production access.
//! The grantee is the User target; the grantor, the actor. An Event Hook
//! delivery (`com.okta.event_hook`) carries System Log events in
//! `data.events`: each is mapped, so one payload may give several rows.

use serde_json::{json, Value};

use super::config::OktaConfig;
use super::{at, canonical, opt_text, text, Canonical, MapError};
use crate::schema::Topic;

/// The `eventType` of an Event Hook delivery, whose `data.events` are
/// System Log events.
pub(super) const EVENT_HOOK: &str = "com.okta.event_hook";

pub(super) fn map(topic: Topic, v: &Value, config: &OktaConfig) -> Result<Vec<Canonical>, MapError> {
    if topic != Topic::Access {
        return Err(MapError::Unmappable(format!("Okta System Log events map onto the access topic, not {topic}")));
    }
    if opt_text(v, "eventType").as_deref() != Some(EVENT_HOOK) {
        return event(v, config);
    }
    // An Event Hook delivery: every event in it, in order. One that cannot
    // be mapped refuses the delivery (dead-lettered whole, nothing lost).
    let events = at(v, "data.events")
        .and_then(Value::as_array)
        .ok_or_else(|| MapError::Unmappable(format!("an {EVENT_HOOK} delivery without `data.events`")))?;
    let mut out = Vec::new();
    for (i, inner) in events.iter().enumerate() {
        let mapped = event(inner, config).map_err(|e| MapError::Unmappable(format!("data.events[{i}]: {e}")))?;
        out.extend(mapped);
    }
    Ok(out)
}

/// One System Log event.
fn event(v: &Value, config: &OktaConfig) -> Result<Vec<Canonical>, MapError> {
    let event_type = text(v, "eventType")?;
    if opt_text(v, "outcome.result").is_some_and(|r| r != "SUCCESS") {
        return Ok(Vec::new());
    }
    let targets = at(v, "target").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let target = |kinds: &[&str]| {
        targets.iter().find(|t| t.get("type").and_then(Value::as_str).is_some_and(|k| kinds.contains(&k)))
    };
    let name = |t: &Value| opt_text(t, "displayName").or_else(|| opt_text(t, "alternateId"));
    let listed = |list: &[String], t: Option<&Value>| t.and_then(name).filter(|n| list.iter().any(|l| l == n));
    let (action, role) = match event_type.as_str() {
        "group.user_membership.add" | "group.user_membership.remove" => {
            let group = target(&["UserGroup"]);
            match (listed(&config.groups, group), listed(&config.elevated_groups, group)) {
                (Some(g), _) => (if event_type.ends_with("add") { "granted" } else { "revoked" }, g),
                (None, Some(g)) => (if event_type.ends_with("add") { "elevated" } else { "revoked" }, g),
                (None, None) => return Ok(Vec::new()),
            }
        }
        "application.user_membership.add" | "application.user_membership.remove" => {
            let Some(app) = listed(&config.apps, target(&["AppInstance"])) else { return Ok(Vec::new()) };
            (if event_type.ends_with("add") { "granted" } else { "revoked" }, app)
        }
        "user.account.privilege.grant" | "user.account.privilege.revoke" if config.admin_privileges => {
            let grant = event_type.ends_with("grant");
            let key = if grant { "privilegeGranted" } else { "privilegeRevoked" };
            let roles = opt_text(v, &format!("debugContext.debugData.{key}")).unwrap_or_else(|| "administrator".into());
            (if grant { "granted" } else { "revoked" }, format!("okta-admin: {roles}"))
        }
        _ => return Ok(Vec::new()),
    };
    let user = target(&["User"])
        .or_else(|| target(&["AppUser"]))
        .and_then(|t| opt_text(t, "alternateId"))
        .ok_or_else(|| MapError::Unmappable(format!("{event_type} names no User target (target[].type)")))?;
    let event = json!({
        "event_id": format!("okta:{}", text(v, "uuid")?),
        "event_time": text(v, "published")?,
        "action": action,
        "principal": user,
        "environment": config.environment,
        "role": role,
        "granted_by": (action != "revoked").then(|| opt_text(v, "actor.alternateId")).flatten(),
        "change_id": config.request_field.as_deref().and_then(|f| at(v, f)).and_then(|c| match c {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }),
    });
    Ok(vec![canonical(event)])
}
