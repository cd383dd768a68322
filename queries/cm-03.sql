-- id: CM-03
-- title: Change request approved by its own requester
-- severity: high
-- domain: Program change management; Segregation of duties
-- coso: Principle 10 (control activities)
-- trigger: change
-- filter: action = 'approved'
-- grace: 15m
-- lookback: 30d
-- violates: An approval of a change request by the person who requested it (the requester on the approval or on the request's created event), under any of their names in the identity map.
-- remediation: Have an independent approver (CAB member or service owner) re-approve the change; review what was deployed under it.
-- Self-approvals are few: they are found first, and only they gather the
-- change's creation as evidence.
WITH self_approved AS (
    SELECT * FROM due a
    WHERE principal(a.actor) = principal(a.requester)
        OR EXISTS (
            SELECT 1 FROM change c
            WHERE c.change_id = a.change_id
                AND c.action = 'created'
                AND c.event_time <= a.event_time
                AND principal(coalesce(c.requester, c.actor)) = principal(a.actor)
        )
)
SELECT
    a.change_id AS subject,
    a.service,
    a.event_time,
    concat('change ', a.change_id, ' of ', a.service, ' was approved by ', a.actor,
           ', who requested it') AS message,
    concat(a.event_id, '@change/', a._partition, '/', a._offset) AS evidence_trigger,
    array_agg(concat(r.event_id, '@change/', r._partition, '/', r._offset)) FILTER (WHERE r.event_id IS NOT NULL) AS evidence_request
FROM self_approved a
LEFT JOIN change r
    ON r.change_id = a.change_id
    AND r.action = 'created'
    AND r.event_time <= a.event_time
GROUP BY a.change_id, a.service, a.event_time, a.actor, a.requester, a.event_id, a._partition, a._offset
