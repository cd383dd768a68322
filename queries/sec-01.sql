-- id: SEC-01
-- title: Deployed commit failed or lacks security scans
-- severity: high
-- domain: Program change management (security testing)
-- coso: Principle 11 (general controls over technology)
-- trigger: deploy
-- filter: environment = 'production' AND status = 'succeeded'
-- grace: 15m
-- lookback: 30d
-- violates: A production deploy whose commit had a failed security scan or one reporting critical findings before the deploy, or has no successful SAST scan or no successful SCA scan before the deploy.
-- remediation: Run SAST and SCA scans on the deployed commit and fix failed scans and critical findings before deploying; roll back if the deployed code is exposed.
SELECT
    d.deploy_id AS subject,
    d.service,
    d.event_time,
    CASE
        WHEN sum(CASE WHEN s.outcome <> 'success' THEN 1 ELSE 0 END) > 0
            THEN concat('deploy ', d.deploy_id, ' of ', d.service, ': a security scan of commit ', d.commit_sha, ' failed')
        WHEN sum(coalesce(s.findings_critical, 0)) > 0
            THEN concat('deploy ', d.deploy_id, ' of ', d.service, ': commit ', d.commit_sha, ' has ', CAST(sum(s.findings_critical) AS VARCHAR), ' critical findings')
        WHEN count(CASE WHEN s.scan_type = 'sast' THEN 1 END) = 0
            THEN concat('deploy ', d.deploy_id, ' of ', d.service, ': commit ', d.commit_sha, ' has no SAST scan')
        ELSE concat('deploy ', d.deploy_id, ' of ', d.service, ': commit ', d.commit_sha, ' has no SCA scan')
    END AS message,
    concat(d.event_id, '@deploy/', d._partition, '/', d._offset) AS evidence_trigger,
    array_agg(concat(s.event_id, '@ci/', s._partition, '/', s._offset)) FILTER (WHERE s.event_id IS NOT NULL) AS evidence_scans
FROM due d
LEFT JOIN ci s
    ON s.commit_sha = d.commit_sha
    AND s.kind = 'scan'
    AND s.event_time <= d.event_time
GROUP BY d.deploy_id, d.service, d.event_time, d.commit_sha, d.event_id, d._partition, d._offset
HAVING sum(CASE WHEN s.outcome <> 'success' THEN 1 ELSE 0 END) > 0
    OR sum(coalesce(s.findings_critical, 0)) > 0
    OR count(CASE WHEN s.scan_type = 'sast' AND s.outcome = 'success' THEN 1 END) = 0
    OR count(CASE WHEN s.scan_type = 'sca' AND s.outcome = 'success' THEN 1 END) = 0
