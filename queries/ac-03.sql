-- id: AC-03
-- title: Break-glass access not revoked within its maximum duration
-- severity: critical
-- domain: Logical access (privileged access)
-- coso: Principle 11 (general controls over technology), Principle 12
-- trigger: access
-- filter: action = 'elevated'
-- deadline: 4h
-- lookback: 1h
-- violates: An elevated (break-glass) access that is neither revoked nor expired within 4 hours of the elevation, and was not granted with an expiry inside those 4 hours.
-- remediation: Revoke the elevated access now; review what was done with it and attach the review to the incident.
SELECT
    e.event_id AS subject,
    e.environment AS service,
    e.event_time,
    concat('elevated ', e.role, ' access of ', e.principal, ' to ', e.environment,
           ' was not revoked within 4 hours') AS message,
    concat(e.event_id, '@access/', e._partition, '/', e._offset) AS evidence_trigger
FROM due e
WHERE (e.expires_at IS NULL OR e.expires_at > e._due_at)
    AND NOT EXISTS (
        SELECT 1 FROM access r
        WHERE principal(r.principal) = principal(e.principal)
            AND r.environment = e.environment
            AND r.role = e.role
            AND r.action IN ('revoked', 'expired')
            AND r.event_time >= e.event_time
            AND r.event_time <= e._due_at
    )
GROUP BY e.event_id, e.environment, e.event_time, e.role, e.principal, e._partition, e._offset
