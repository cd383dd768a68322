-- id: SOD-01
-- title: Pull request merged without an independent approving review
-- severity: high
-- domain: Segregation of duties; Program change management (code review)
-- coso: Principle 10 (control activities)
-- trigger: ci
-- filter: kind = 'pr_merged'
-- grace: 15m
-- lookback: 30d
-- violates: A merged pull request with no review in state approved, at or before the merge, by someone other than its author (under any of the author's names in the identity map).
-- remediation: Have another engineer review the merged change after the fact; require an approving review in branch protection.
-- Merges with an independent approval are most of them: they are set aside
-- first (an anti join), and only the rest gather their reviews as evidence.
WITH unapproved AS (
    SELECT * FROM due m
    WHERE NOT EXISTS (
        SELECT 1 FROM ci r
        WHERE r.kind = 'pr_review'
            AND r.repo = m.repo
            AND r.pr_number = m.pr_number
            AND r.review_state = 'approved'
            AND r.event_time <= m.event_time
            AND principal(r.actor) <> principal(m.author)
    )
)
SELECT
    concat(m.repo, '#', coalesce(CAST(m.pr_number AS VARCHAR), m.commit_sha)) AS subject,
    m.service,
    m.event_time,
    concat('pull request ', m.repo, '#', coalesce(CAST(m.pr_number AS VARCHAR), m.commit_sha), ' by ',
           coalesce(m.author, 'an unknown author'), ' was merged without an approving review by someone else') AS message,
    concat(m.event_id, '@ci/', m._partition, '/', m._offset) AS evidence_trigger,
    array_agg(concat(v.event_id, '@ci/', v._partition, '/', v._offset)) FILTER (WHERE v.event_id IS NOT NULL) AS evidence_reviews
FROM unapproved m
LEFT JOIN ci v
    ON v.kind = 'pr_review'
    AND v.repo = m.repo
    AND v.pr_number = m.pr_number
    AND v.event_time <= m.event_time
GROUP BY m.repo, m.pr_number, m.commit_sha, m.service, m.event_time, m.author, m.event_id, m._partition, m._offset
