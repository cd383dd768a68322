-- id: CM-02
-- title: Production deploy outside the approved change window
-- severity: medium
-- domain: Program change management
-- coso: Principle 11 (general controls over technology)
-- trigger: deploy
-- filter: environment = 'production' AND status = 'succeeded'
-- grace: 15m
-- lookback: 30d
-- violates: A production deploy whose change request was approved (at or before the deploy) only with change windows that do not contain the deploy's time. Deploys without an approved change are CM-01's; an approval without a window sets no window.
-- remediation: Deploy inside the approved window, or have the change request's window amended and re-approved before deploying.
SELECT
    d.deploy_id AS subject,
    d.service,
    d.event_time,
    concat('deploy ', d.deploy_id, ' of ', d.service, ' at ', CAST(d.event_time AS VARCHAR),
           ' is outside the window approved for change ', d.change_id, ' (',
           CAST(min(a.window_start) AS VARCHAR), ' to ', CAST(max(a.window_end) AS VARCHAR), ')') AS message,
    concat(d.event_id, '@deploy/', d._partition, '/', d._offset) AS evidence_trigger,
    array_agg(concat(a.event_id, '@change/', a._partition, '/', a._offset)) AS evidence_approval
FROM due d
JOIN change a
    ON a.change_id = d.change_id
    AND a.service = d.service
    AND a.action = 'approved'
    AND a.event_time <= d.event_time
GROUP BY d.deploy_id, d.service, d.event_time, d.change_id, d.event_id, d._partition, d._offset
HAVING count(CASE
        WHEN a.window_start IS NULL OR a.window_end IS NULL THEN 1
        WHEN d.event_time >= a.window_start AND d.event_time <= a.window_end THEN 1
    END) = 0
