-- id: EVIDENCE
-- title: Audit evidence of a production deploy
-- severity: info
-- record: evidence
-- trigger: deploy
-- filter: environment = 'production' AND status IN ('succeeded', 'failed', 'rolled_back')
-- deadline: 24h15m
-- lookback: 31d
-- violates: Not a control: one evidence record per finished production deploy, written once every control that judges the deploy has decided (the longest wait is CM-04's 24h deadline).
--
-- One row per deploy: the trace from the deploy back to its commit, pull
-- request and reviewers, test runs, scans and builds of the commit, the
-- change request and who approved it when, and the deployer's access grant
-- active at the deploy.
-- Columns named `subject:<CONTROL>` tell which subject of that control
-- concerns this deploy; the processor adds every control's outcome.
WITH d AS (
    SELECT * FROM due
),
merge AS (
    SELECT d.deploy_id,
           max(concat(m.repo, '#', coalesce(CAST(m.pr_number AS VARCHAR), m.commit_sha))) AS pull_request,
           max(m.repo) AS repo, max(m.pr_number) AS pr_number,
           max(m.author) AS pr_author, max(m.actor) AS merged_by
    FROM d JOIN ci m
        ON m.kind = 'pr_merged' AND m.commit_sha = d.commit_sha AND m.event_time <= d.event_time
    GROUP BY d.deploy_id
),
review AS (
    SELECT DISTINCT merge.deploy_id, concat(r.actor, ' ', r.review_state) AS reviewer
    FROM merge JOIN ci r
        ON r.kind = 'pr_review' AND r.repo = merge.repo AND r.pr_number = merge.pr_number
),
reviews AS (
    SELECT deploy_id, array_agg(reviewer) AS reviewers FROM review GROUP BY deploy_id
),
run AS (
    SELECT DISTINCT d.deploy_id,
           concat(c.kind, ' ', coalesce(c.scan_type, ''), ' ', coalesce(c.outcome, ''), ' ',
                  coalesce(c.pipeline_run_id, c.event_id)) AS ci_run
    FROM d JOIN ci c
        ON c.commit_sha = d.commit_sha AND c.kind IN ('build', 'test', 'scan') AND c.event_time <= d.event_time
),
runs AS (
    SELECT deploy_id, array_agg(ci_run) AS ci_runs FROM run GROUP BY deploy_id
),
approval AS (
    SELECT d.deploy_id,
           max(CASE WHEN c.action = 'approved' THEN c.actor END) AS change_approver,
           max(CASE WHEN c.action = 'approved' THEN c.event_time END) AS change_approved_at,
           max(c.change_type) AS change_type
    FROM d JOIN change c
        ON c.change_id = d.change_id AND c.event_time <= d.event_time
    GROUP BY d.deploy_id
),
-- The grant active at the deploy, read per role as AC-01 does: the role's
-- latest unexpired grant, unless a revocation or expiry came at or after it.
grant_role AS (
    SELECT d.deploy_id,
           max(CASE WHEN a.action IN ('granted', 'elevated')
                     AND (a.expires_at IS NULL OR a.expires_at > d.event_time) THEN a.event_time END) AS granted_at,
           max(CASE WHEN a.action IN ('revoked', 'expired') THEN a.event_time END) AS ended_at,
           last_value(concat(a.role, ' ', a.action, ' ', a.event_id) ORDER BY a.event_time)
               FILTER (WHERE a.action IN ('granted', 'elevated')
                       AND (a.expires_at IS NULL OR a.expires_at > d.event_time)) AS access_grant
    FROM d JOIN access a
        ON principal(a.principal) = principal(d.actor) AND a.environment = d.environment
        AND a.event_time <= d.event_time
    GROUP BY d.deploy_id, a.role
),
grants AS (
    SELECT deploy_id, max(access_grant) AS access_grant
    FROM grant_role
    WHERE granted_at IS NOT NULL AND (ended_at IS NULL OR ended_at < granted_at)
    GROUP BY deploy_id
)
SELECT
    d.deploy_id AS subject,
    d.service,
    d.event_time,
    d.environment,
    d.status,
    d.commit_sha,
    d.artifact_digest,
    d.actor AS deployer,
    d.automated,
    d.change_id,
    approval.change_approver,
    approval.change_approved_at,
    approval.change_type,
    merge.pull_request,
    merge.pr_author,
    merge.merged_by,
    reviews.reviewers,
    runs.ci_runs,
    grants.access_grant,
    d._partition AS source_partition,
    concat(d.event_id, '@deploy/', d._partition, '/', d._offset) AS source,
    -- Named as SOD-01 names it: a merge without a number by its commit.
    merge.pull_request AS "subject:SOD-01",
    d.change_id AS "subject:CM-03"
-- Each part is joined to the deploys as a hash table of its own, and the
-- deploys stream through the joins: a LEFT JOIN chain would gather every
-- column joined so far into the next join's hash table instead.
FROM runs RIGHT JOIN (reviews RIGHT JOIN (merge RIGHT JOIN (grants RIGHT JOIN (approval RIGHT JOIN d
    ON approval.deploy_id = d.deploy_id)
    ON grants.deploy_id = d.deploy_id)
    ON merge.deploy_id = d.deploy_id)
    ON reviews.deploy_id = d.deploy_id)
    ON runs.deploy_id = d.deploy_id
