-- id: AC-02
-- title: Production access granted without an approved request, or by the grantee
-- severity: high
-- domain: Logical access (provisioning)
-- coso: Principle 11 (general controls over technology), Principle 12
-- trigger: access
-- filter: environment = 'production' AND action = 'granted'
-- grace: 15m
-- lookback: 30d
-- violates: A production access grant that names no access request, whose request was not approved at or before the grant (or was rejected or cancelled after its approval), or that was granted by the grantee themself (through the identity map).
-- remediation: Revoke the grant, file an access request, and re-grant only after an independent approval.
SELECT
    a.event_id AS subject,
    a.environment AS service,
    a.event_time,
    CASE
        WHEN principal(a.granted_by) = principal(a.principal)
            THEN concat(a.principal, ' granted themself ', a.role, ' access to ', a.environment)
        WHEN a.change_id IS NULL
            THEN concat(a.role, ' access to ', a.environment, ' was granted to ', a.principal, ' without an access request')
        ELSE concat(a.role, ' access to ', a.environment, ' was granted to ', a.principal,
                    ' before request ', a.change_id, ' was approved')
    END AS message,
    concat(a.event_id, '@access/', a._partition, '/', a._offset) AS evidence_trigger,
    array_agg(concat(c.event_id, '@change/', c._partition, '/', c._offset)) FILTER (WHERE c.event_id IS NOT NULL) AS evidence_request
FROM due a
LEFT JOIN change c
    ON c.change_id = a.change_id
    AND c.event_time <= a.event_time
GROUP BY a.event_id, a.environment, a.event_time, a.principal, a.role, a.granted_by, a.change_id, a._partition, a._offset
HAVING coalesce(principal(a.granted_by) = principal(a.principal), false)
    OR max(CASE WHEN c.action = 'approved' THEN c.event_time END) IS NULL
    OR max(CASE WHEN c.action IN ('rejected', 'cancelled') THEN c.event_time END)
        >= max(CASE WHEN c.action = 'approved' THEN c.event_time END)
