-- id: INT-01
-- title: Deployed artifact was not built by CI from the deployed commit
-- severity: critical
-- domain: Program change management (integrity of what is deployed)
-- coso: Principle 11 (general controls over technology)
-- trigger: deploy
-- filter: environment = 'production' AND status = 'succeeded'
-- grace: 15m
-- lookback: 30d
-- violates: A production deploy whose artifact digest is missing, or is not the artifact of a successful CI build of the deployed commit at or before the deploy.
-- remediation: Redeploy an artifact built by CI from the reviewed commit; investigate where the deployed artifact came from.
-- Deploys with a matching build are most of them: they are set aside first
-- (an anti join), and only the rest gather the commit's builds as evidence.
WITH unbuilt AS (
    SELECT * FROM due d
    WHERE NOT EXISTS (
        SELECT 1 FROM ci b
        WHERE b.kind = 'build'
            AND b.outcome = 'success'
            AND b.commit_sha = d.commit_sha
            AND b.artifact_digest = d.artifact_digest
            AND b.event_time <= d.event_time
    )
)
SELECT
    d.deploy_id AS subject,
    d.service,
    d.event_time,
    CASE
        WHEN d.artifact_digest IS NULL
            THEN concat('deploy ', d.deploy_id, ' of ', d.service, ' names no artifact digest')
        ELSE concat('deploy ', d.deploy_id, ' of ', d.service, ': artifact ', d.artifact_digest,
                    ' was not built by CI from commit ', d.commit_sha)
    END AS message,
    concat(d.event_id, '@deploy/', d._partition, '/', d._offset) AS evidence_trigger,
    array_agg(concat(c.event_id, '@ci/', c._partition, '/', c._offset)) FILTER (WHERE c.event_id IS NOT NULL) AS evidence_builds
FROM unbuilt d
LEFT JOIN ci c
    ON c.kind = 'build'
    AND c.commit_sha = d.commit_sha
    AND c.event_time <= d.event_time
GROUP BY d.deploy_id, d.service, d.event_time, d.commit_sha, d.artifact_digest, d.event_id, d._partition, d._offset
