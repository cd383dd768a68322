-- id: SOD-02
-- title: Deployer authored the deployed commit
-- severity: critical
-- domain: Segregation of duties
-- coso: Principle 10 (control activities), Principle 11
-- trigger: deploy
-- filter: environment = 'production' AND status = 'succeeded' AND NOT automated
-- grace: 15m
-- lookback: 30d
-- violates: A human (not the pipeline's service account) deployed to production a commit whose merged pull request they authored, under any of their names in the identity map.
-- remediation: Have someone other than the author (or the pipeline's service account) deploy the change; review the deploy for unauthorised content.
SELECT
    d.deploy_id AS subject,
    d.service,
    d.event_time,
    concat('deploy ', d.deploy_id, ' of ', d.service, ': ', d.actor, ' deployed commit ', d.commit_sha,
           ' which they authored (pull request #', CAST(min(m.pr_number) AS VARCHAR), ')') AS message,
    concat(d.event_id, '@deploy/', d._partition, '/', d._offset) AS evidence_trigger,
    array_agg(concat(m.event_id, '@ci/', m._partition, '/', m._offset)) AS evidence_merge
FROM due d
JOIN ci m
    ON m.commit_sha = d.commit_sha
    AND m.kind = 'pr_merged'
    AND principal(m.author) = principal(d.actor)
    AND m.event_time <= d.event_time
GROUP BY d.deploy_id, d.service, d.event_time, d.actor, d.commit_sha, d.event_id, d._partition, d._offset
