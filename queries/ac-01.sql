-- id: AC-01
-- title: Human deployer held no active production access
-- severity: high
-- domain: Logical access
-- coso: Principle 11 (general controls over technology), Principle 12
-- trigger: deploy
-- filter: environment = 'production' AND status = 'succeeded' AND NOT automated
-- grace: 15m
-- lookback: 90d
-- violates: A human deployed to production without an access grant active at the deploy's instant: granted (or elevated) at or before the deploy, not expired by then, and not revoked or expired since. Compares principals through the identity map. Grants older than the 90-day look-back count only if re-certified (re-granted) since, as a quarterly access review does.
-- remediation: Find out how the deploy was possible without access (shared credentials, a stale session); revoke the path and re-grant access through an approved request.
--
-- An as-of join: every grant the deployer held before the deploy, each with
-- the count of revocations or expiries between it and the deploy; a grant
-- with none is active.
WITH grants AS (
    SELECT
        d.deploy_id,
        g.event_id,
        g._partition,
        g._offset,
        count(x.event_id) AS ended
    FROM due d
    JOIN access g
        ON principal(g.principal) = principal(d.actor)
        AND g.environment = d.environment
        AND g.action IN ('granted', 'elevated')
        AND g.event_time <= d.event_time
        AND (g.expires_at IS NULL OR g.expires_at > d.event_time)
    LEFT JOIN access x
        ON principal(x.principal) = principal(g.principal)
        AND x.environment = g.environment
        AND x.role = g.role
        AND x.action IN ('revoked', 'expired')
        AND x.event_time >= g.event_time
        AND x.event_time <= d.event_time
    GROUP BY d.deploy_id, g.event_id, g._partition, g._offset
)
SELECT
    d.deploy_id AS subject,
    d.service,
    d.event_time,
    CASE
        WHEN count(a.event_id) = 0
            THEN concat('deploy ', d.deploy_id, ' of ', d.service, ': ', d.actor,
                        ' held no unexpired production access grant at the deploy')
        ELSE concat('deploy ', d.deploy_id, ' of ', d.service, ': ', d.actor,
                    '''s production access had been revoked or had expired before the deploy')
    END AS message,
    concat(d.event_id, '@deploy/', d._partition, '/', d._offset) AS evidence_trigger,
    array_agg(concat(a.event_id, '@access/', a._partition, '/', a._offset)) FILTER (WHERE a.event_id IS NOT NULL) AS evidence_grants
FROM due d
LEFT JOIN grants a ON a.deploy_id = d.deploy_id
GROUP BY d.deploy_id, d.service, d.event_time, d.actor, d.event_id, d._partition, d._offset
HAVING count(CASE WHEN a.ended = 0 THEN 1 END) = 0
