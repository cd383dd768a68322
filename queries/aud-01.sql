-- id: AUD-01
-- title: Production deploy never reported its outcome
-- severity: medium
-- domain: Computer operations (audit trail)
-- coso: Principle 13 (quality information), Principle 16 (monitoring)
-- trigger: deploy
-- filter: environment = 'production' AND status = 'started'
-- deadline: 1h
-- lookback: 1h
-- violates: A production deploy that started but reported no outcome (succeeded, failed or rolled back) within 1 hour.
-- remediation: Find out what the deploy did and record its outcome; fix the deploy tool's event delivery.
SELECT
    s.deploy_id AS subject,
    s.service,
    s.event_time,
    concat('deploy ', s.deploy_id, ' of ', s.service, ' to production started at ', CAST(s.event_time AS VARCHAR),
           ' and reported no outcome within 1 hour') AS message,
    concat(s.event_id, '@deploy/', s._partition, '/', s._offset) AS evidence_trigger
FROM due s
WHERE NOT EXISTS (
    SELECT 1 FROM deploy f
    WHERE f.deploy_id = s.deploy_id
        AND f.status IN ('succeeded', 'failed', 'rolled_back')
        AND f.event_time >= s.event_time
        AND f.event_time <= s._due_at
)
GROUP BY s.deploy_id, s.service, s.event_time, s.event_id, s._partition, s._offset
