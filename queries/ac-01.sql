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
-- An as-of read per role: the deployer's latest grant of the role before
-- the deploy that had not expired by then, and the latest revocation or
-- expiry of the role at or before the deploy. The role is active when its
-- grant came after its last end; an end at or after that grant ended every
-- earlier grant of the role too. So this decides as pairing every grant
-- with every end would, in time linear in the deployer's history.
WITH roles AS (
    SELECT
        d.deploy_id,
        a.role,
        max(CASE WHEN a.action IN ('granted', 'elevated')
                  AND (a.expires_at IS NULL OR a.expires_at > d.event_time) THEN a.event_time END) AS granted_at,
        max(CASE WHEN a.action IN ('revoked', 'expired') THEN a.event_time END) AS ended_at,
        last_value(concat(a.event_id, '@access/', a._partition, '/', a._offset) ORDER BY a.event_time)
            FILTER (WHERE a.action IN ('granted', 'elevated')
                    AND (a.expires_at IS NULL OR a.expires_at > d.event_time)) AS grant_event,
        last_value(concat(a.event_id, '@access/', a._partition, '/', a._offset) ORDER BY a.event_time)
            FILTER (WHERE a.action IN ('revoked', 'expired')) AS end_event
    FROM due d
    JOIN access a
        ON principal(a.principal) = principal(d.actor)
        AND a.environment = d.environment
        AND a.event_time <= d.event_time
    GROUP BY d.deploy_id, a.role
)
SELECT
    d.deploy_id AS subject,
    d.service,
    d.event_time,
    CASE
        WHEN count(r.granted_at) = 0
            THEN concat('deploy ', d.deploy_id, ' of ', d.service, ': ', d.actor,
                        ' held no unexpired production access grant at the deploy')
        ELSE concat('deploy ', d.deploy_id, ' of ', d.service, ': ', d.actor,
                    '''s production access had been revoked or had expired before the deploy')
    END AS message,
    concat(d.event_id, '@deploy/', d._partition, '/', d._offset) AS evidence_trigger,
    array_agg(r.grant_event) FILTER (WHERE r.grant_event IS NOT NULL) AS evidence_grants,
    array_agg(r.end_event) FILTER (WHERE r.grant_event IS NOT NULL AND r.end_event IS NOT NULL) AS evidence_ends
FROM due d
LEFT JOIN roles r ON r.deploy_id = d.deploy_id
GROUP BY d.deploy_id, d.service, d.event_time, d.actor, d.event_id, d._partition, d._offset
HAVING count(CASE WHEN r.granted_at IS NOT NULL AND (r.ended_at IS NULL OR r.ended_at < r.granted_at) THEN 1 END) = 0
