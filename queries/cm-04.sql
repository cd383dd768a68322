-- id: CM-04
-- title: Emergency change deployed without retrospective approval
-- severity: high
-- domain: Program change management (emergency changes)
-- coso: Principle 11 (general controls over technology)
-- trigger: deploy
-- filter: environment = 'production' AND status = 'succeeded'
-- deadline: 24h
-- lookback: 30d
-- violates: A production deploy under an emergency change request (raised as emergency at or before the deploy) that is not approved within 24 hours after the deploy.
-- remediation: Have the change advisory board review and approve the emergency change retrospectively, or roll the deploy back.
-- Few deploys are under an emergency change, and fewer of those unapproved:
-- they are found first (semi and anti joins), and only they gather the
-- change's events as evidence.
WITH unapproved AS (
    SELECT * FROM due d
    WHERE EXISTS (
        SELECT 1 FROM change e
        WHERE e.change_id = d.change_id
            AND e.service = d.service
            AND e.change_type = 'emergency'
            AND e.event_time <= d.event_time
    )
    AND NOT EXISTS (
        SELECT 1 FROM change a
        WHERE a.change_id = d.change_id
            AND a.service = d.service
            AND a.action = 'approved'
            AND a.event_time <= d._due_at
    )
)
SELECT
    d.deploy_id AS subject,
    d.service,
    d.event_time,
    concat('deploy ', d.deploy_id, ' of ', d.service, ' under emergency change ', d.change_id,
           ' was not approved within 24 hours') AS message,
    concat(d.event_id, '@deploy/', d._partition, '/', d._offset) AS evidence_trigger,
    array_agg(concat(c.event_id, '@change/', c._partition, '/', c._offset)) AS evidence_change
FROM unapproved d
JOIN change c
    ON c.change_id = d.change_id
    AND c.service = d.service
    AND c.event_time <= d._due_at
GROUP BY d.deploy_id, d.service, d.event_time, d.change_id, d.event_id, d._partition, d._offset
