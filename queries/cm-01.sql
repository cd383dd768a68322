-- id: CM-01
-- title: Production deploy without an approved change request
-- severity: high
-- domain: Program change management
-- coso: Principle 11 (general controls over technology)
-- trigger: deploy
-- filter: environment = 'production' AND status = 'succeeded'
-- grace: 15m
-- lookback: 30d
-- violates: A production deploy that names no change request, or whose change request (for the same service) was not approved at or before the deploy, or was rejected or cancelled after its approval. Emergency changes are judged by CM-04 instead.
-- remediation: Link the deploy to a change request for the same service that is approved before the deploy, or raise an emergency change and approve it retrospectively.
--
-- A change that was raised as an emergency before the deploy is approved
-- retrospectively; CM-04 decides those.
SELECT
    d.deploy_id AS subject,
    d.service,
    d.event_time,
    CASE
        WHEN d.change_id IS NULL THEN concat('deploy ', d.deploy_id, ' of ', d.service, ' to production names no change request')
        WHEN max(CASE WHEN c.action = 'approved' THEN c.event_time END) IS NULL
            THEN concat('deploy ', d.deploy_id, ' of ', d.service, ': change ', d.change_id, ' was not approved for ', d.service, ' before the deploy')
        ELSE concat('deploy ', d.deploy_id, ' of ', d.service, ': change ', d.change_id, ' was rejected or cancelled after its approval')
    END AS message,
    concat(d.event_id, '@deploy/', d._partition, '/', d._offset) AS evidence_trigger,
    array_agg(concat(c.event_id, '@change/', c._partition, '/', c._offset)) FILTER (WHERE c.event_id IS NOT NULL) AS evidence_change
FROM due d
LEFT JOIN change c
    ON c.change_id = d.change_id
    AND c.service = d.service
    AND c.event_time <= d.event_time
GROUP BY d.deploy_id, d.service, d.event_time, d.change_id, d.event_id, d._partition, d._offset
HAVING count(CASE WHEN c.change_type = 'emergency' THEN 1 END) = 0
    AND (max(CASE WHEN c.action = 'approved' THEN c.event_time END) IS NULL
        OR max(CASE WHEN c.action IN ('rejected', 'cancelled') THEN c.event_time END)
            >= max(CASE WHEN c.action = 'approved' THEN c.event_time END))
