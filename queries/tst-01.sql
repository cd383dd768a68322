-- id: TST-01
-- title: Deployed commit has no successful test run
-- severity: medium
-- domain: Program change management (testing)
-- coso: Principle 11 (general controls over technology)
-- trigger: deploy
-- filter: environment = 'production' AND status = 'succeeded'
-- grace: 15m
-- lookback: 30d
-- violates: A production deploy whose commit has no test run with outcome success at or before the deploy.
-- remediation: Run the test suite on the deployed commit; if it fails, roll back or fix forward and record the result.
-- Deploys with a passing test run are most of them: they are set aside first
-- (an anti join), and only the rest gather the commit's test runs.
WITH untested AS (
    SELECT * FROM due d
    WHERE NOT EXISTS (
        SELECT 1 FROM ci t
        WHERE t.commit_sha = d.commit_sha
            AND t.kind = 'test'
            AND t.outcome = 'success'
            AND t.event_time <= d.event_time
    )
)
SELECT
    d.deploy_id AS subject,
    d.service,
    d.event_time,
    CASE
        WHEN count(t.event_id) = 0
            THEN concat('deploy ', d.deploy_id, ' of ', d.service, ': commit ', d.commit_sha, ' has no test run')
        ELSE concat('deploy ', d.deploy_id, ' of ', d.service, ': none of the ', CAST(count(t.event_id) AS VARCHAR),
                    ' test runs of commit ', d.commit_sha, ' succeeded')
    END AS message,
    concat(d.event_id, '@deploy/', d._partition, '/', d._offset) AS evidence_trigger,
    array_agg(concat(t.event_id, '@ci/', t._partition, '/', t._offset)) FILTER (WHERE t.event_id IS NOT NULL) AS evidence_tests
FROM untested d
LEFT JOIN ci t
    ON t.commit_sha = d.commit_sha
    AND t.kind = 'test'
    AND t.event_time <= d.event_time
GROUP BY d.deploy_id, d.service, d.event_time, d.commit_sha, d.event_id, d._partition, d._offset
