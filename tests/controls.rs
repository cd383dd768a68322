//! The shipped controls against their fixture cases (queries/tests/*.toml),
//! the case runner itself, and the generated controls reference.

use std::collections::BTreeMap;
use std::path::Path;

use vigil::controls::{builtin_sources, parse_meta, reference, ControlSet};
use vigil::schema::Catalog;
use vigil::testing::{run_dir, run_file};

#[tokio::test]
async fn every_shipped_control_passes_its_cases_and_has_at_least_two() {
    let report = run_dir(Path::new("queries")).await.unwrap();
    assert_eq!(report.failed(), 0, "{}", report.render());
    assert!(report.untested.is_empty(), "controls without cases: {:?}", report.untested);
    let mut per_control: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &report.results {
        *per_control.entry(r.control.as_str()).or_default() += 1;
    }
    for source in builtin_sources() {
        let id = parse_meta(&source.sql).unwrap().id;
        let n = per_control.get(id.as_str()).copied().unwrap_or(0);
        assert!(n >= 2, "{id} has {n} cases; every control needs positive and negative cases");
    }
}

const DEPLOY_DEFAULTS: &str = r#"
control = "CM-01"
[defaults.deploy]
deploy_id = "dep-1"
service = "payments"
environment = "production"
commit_sha = "c0ffee"
actor = "svc-deploybot"
automated = true
status = "succeeded"
"#;

#[tokio::test]
async fn a_failing_case_shows_what_was_missing_and_what_was_unexpected() {
    let text = format!(
        "{DEPLOY_DEFAULTS}\n[[case]]\nname = \"wrong on purpose\"\n\
         events = [{{ topic = \"deploy\", at = \"T\" }}]\nexpect = [\"dep-9\"]\n"
    );
    let results = run_file("inline.toml", &text, &builtin_sources()).await.unwrap();
    assert_eq!(results.len(), 1);
    let problems = results[0].problems.join("\n");
    assert!(!results[0].passed());
    assert!(problems.contains("- dep-9 (expected, not found)"), "{problems}");
    assert!(problems.contains("+ dep-1 (found, not expected)"), "{problems}");
}

#[tokio::test]
async fn decided_checks_what_is_known_at_a_watermark() {
    // CM-01's grace is 15 minutes: at T+14m nothing may be decided yet.
    let text = format!(
        "{DEPLOY_DEFAULTS}\n[[case]]\nname = \"too early\"\n\
         events = [{{ topic = \"deploy\", at = \"T\" }}, {{ watermark = \"T+14m\", decided = [\"dep-1\"] }}]\n\
         expect = [\"dep-1\"]\n"
    );
    let results = run_file("inline.toml", &text, &builtin_sources()).await.unwrap();
    let problems = results[0].problems.join("\n");
    assert!(problems.contains("at watermark \"T+14m\"") && problems.contains("- dep-1"), "{problems}");
}

#[tokio::test]
async fn a_fixture_event_that_does_not_decode_names_the_event_and_field() {
    let text = format!(
        "{DEPLOY_DEFAULTS}\n[[case]]\nname = \"bad fixture\"\n\
         events = [{{ topic = \"deploy\", at = \"T\", automated = \"yes\" }}]\nexpect = []\n"
    );
    let results = run_file("inline.toml", &text, &builtin_sources()).await.unwrap();
    let problems = results[0].problems.join("\n");
    assert!(problems.contains("event 1 (deploy)") && problems.contains("automated"), "{problems}");
}

#[tokio::test]
async fn an_unknown_control_or_key_is_reported() {
    let text = "control = \"NOPE-1\"\n[[case]]\nname = \"x\"\nevents = []\nexpect = []\n";
    let results = run_file("inline.toml", text, &builtin_sources()).await.unwrap();
    assert!(results[0].problems[0].contains("NOPE-1"), "{:?}", results[0].problems);
    let err = run_file("inline.toml", "colour = \"red\"\n", &builtin_sources()).await.unwrap_err();
    assert!(err.contains("inline.toml") && err.contains("colour"), "{err}");
}

#[tokio::test]
async fn every_shipped_control_plans_against_the_schemas() {
    let catalog = Catalog::builtin().unwrap();
    let errors = ControlSet::check(&builtin_sources(), &catalog, &Default::default()).await;
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn the_controls_reference_is_in_sync_with_the_headers() {
    let want = reference(&builtin_sources()).unwrap();
    let have = std::fs::read_to_string("docs/controls.md").unwrap_or_default();
    assert!(
        have == want,
        "docs/controls.md is out of date with the control headers; regenerate it with \
         `vigil docs --out docs/controls.md`"
    );
}

#[tokio::test]
async fn retention_per_topic_follows_the_controls_that_scan_it() {
    use std::time::Duration;
    use vigil::schema::Topic;
    use vigil::state::State;
    let catalog = Catalog::builtin().unwrap();
    let state = State::new(Topic::ALL.map(|t| &**catalog.event(t)));
    let controls = ControlSet::plan(&builtin_sources(), &catalog, &state, &Default::default()).await.unwrap();
    let h = |n: u64| Duration::from_secs(n * 3600);
    // AC-01 (grace 15m, look-back 90d) is the only control that reaches back 90 days, into access.
    assert_eq!(controls.retention(Topic::Access), h(90 * 24) + Duration::from_secs(900));
    // CM-04 (deadline 24h, look-back 30d) scans change.
    assert_eq!(controls.retention(Topic::Change), h(24) + h(30 * 24));
    assert_eq!(controls.retention(Topic::Ci), h(30 * 24) + Duration::from_secs(900));
    // Only AUD-01 (deadline 1h, look-back 1h) scans the deploy table; the others read `due`.
    assert_eq!(controls.retention(Topic::Deploy), h(2));
}

#[tokio::test]
async fn an_undecided_trigger_holds_back_its_partitions_commit() {
    use std::sync::Arc;
    use vigil::decode::{Decoder, Format, RawMessage, SchemaResolver, TimeBounds};
    use vigil::schema::Topic;
    use vigil::state::State;
    let catalog = Catalog::builtin().unwrap();
    let state = State::new(Topic::ALL.map(|t| &**catalog.event(t)));
    let mut controls = ControlSet::plan(&builtin_sources(), &catalog, &state, &Default::default()).await.unwrap();
    let decoder = Decoder::new(
        catalog.event(Topic::Deploy).clone(),
        Arc::new(SchemaResolver::new(None, None).unwrap()),
        Format::Json,
        TimeBounds::default(),
    );
    let t = vigil::testing::T_MS;
    let payload = format!(
        r#"{{"event_id":"e","event_time":{t},"deploy_id":"d","service":"s","environment":"production",
            "commit_sha":"c","actor":"svc","automated":true,"status":"succeeded"}}"#
    );
    let decoded = decoder.decode([RawMessage::new(Some(payload.as_bytes()), 2, 41)], t);
    controls.admit(Topic::Deploy, &decoded.batch.unwrap(), None).unwrap();
    assert_eq!(controls.low_water_offsets().get(&(Topic::Deploy, 2)), Some(&41));
    // Past every grace but not CM-04's 24-hour deadline: still held.
    controls.evaluate(&state, t + 2 * 3_600_000).await.unwrap();
    assert_eq!(controls.low_water_offsets().get(&(Topic::Deploy, 2)), Some(&41));
    controls.evaluate(&state, t + 25 * 3_600_000).await.unwrap();
    assert!(controls.low_water_offsets().is_empty());
}

/// A control's physical plan is kept and rebound for later runs over tables
/// of the same sizes: each run must still read that run's rows, and a part
/// the planner answered from statistics (a whole table's `count(*)`) must
/// not be kept at all.
#[tokio::test]
async fn a_kept_plan_reads_each_runs_rows() {
    use std::sync::Arc;
    use vigil::controls::ControlSource;
    use vigil::decode::{Decoder, Format, RawMessage, SchemaResolver, TimeBounds};
    use vigil::schema::Topic;
    use vigil::state::State;
    let catalog = Catalog::builtin().unwrap();
    let mut state = State::new(Topic::ALL.map(|t| &**catalog.event(t)));
    let header = "-- title: t\n-- severity: low\n-- trigger: deploy\n-- grace: 1m\n-- lookback: 1d\n";
    let builds = "SELECT d.deploy_id AS subject, d.service, d.event_time,
            concat('builds ', CAST(count(c.event_id) AS VARCHAR)) AS message
        FROM due d LEFT JOIN ci c ON c.commit_sha = d.commit_sha AND c.kind = 'build'
        GROUP BY d.deploy_id, d.service, d.event_time";
    let total = "SELECT d.deploy_id AS subject, d.service, d.event_time,
            concat('ci ', CAST((SELECT count(*) FROM ci) AS VARCHAR)) AS message FROM due d";
    let sources = [("X-01", builds), ("X-02", total)]
        .map(|(id, sql)| ControlSource { file: id.into(), sql: format!("-- id: {id}\n{header}{sql}") });
    let mut controls = ControlSet::plan(&sources, &catalog, &state, &Default::default()).await.unwrap();
    let resolver = Arc::new(SchemaResolver::new(None, None).unwrap());
    let decoder =
        |t: Topic| Decoder::new(catalog.event(t).clone(), resolver.clone(), Format::Json, TimeBounds::default());
    let t = vigil::testing::T_MS;
    for run in 0..4i64 {
        let at = t + run * 3_600_000;
        let ci = format!(
            r#"{{"event_id":"b{run}","event_time":{at},"kind":"build","repo":"r","service":"s","commit_sha":"c"}}"#
        );
        state.append(
            Topic::Ci,
            decoder(Topic::Ci).decode([RawMessage::new(Some(ci.as_bytes()), 0, run)], at).batch.unwrap(),
        );
        let deploy = format!(
            r#"{{"event_id":"e{run}","event_time":{at},"deploy_id":"d{run}","service":"s","environment":"production",
                "commit_sha":"c","actor":"svc","automated":true,"status":"succeeded"}}"#
        );
        let batch =
            decoder(Topic::Deploy).decode([RawMessage::new(Some(deploy.as_bytes()), 0, run)], at).batch.unwrap();
        controls.admit(Topic::Deploy, &batch, None).unwrap();
        let evaluations = controls.evaluate(&state, at + 120_000).await.unwrap();
        let messages: Vec<&str> =
            evaluations.iter().flat_map(|e| e.findings.iter().map(|f| f.message.as_str())).collect();
        let n = run + 1;
        assert_eq!(messages, [format!("builds {n}"), format!("ci {n}")], "run {run}");
    }
}

/// Controls with different due rows never share a lookup, though they look
/// the same table up by the same key in one evaluation (lookups are shared
/// only between identical key values).
#[tokio::test]
async fn a_lookup_is_shared_only_by_the_same_due_keys() {
    use std::sync::Arc;
    use vigil::controls::ControlSource;
    use vigil::decode::{Decoder, Format, RawMessage, SchemaResolver, TimeBounds};
    use vigil::schema::Topic;
    let catalog = Catalog::builtin().unwrap();
    let header = "-- title: t\n-- severity: low\n-- trigger: deploy\n-- grace: 1m\n-- lookback: 1d\n";
    let sql = "SELECT d.deploy_id AS subject, d.service, d.event_time,
            concat('builds ', CAST(count(c.event_id) AS VARCHAR)) AS message
        FROM due d LEFT JOIN ci c ON c.commit_sha = d.commit_sha
        GROUP BY d.deploy_id, d.service, d.event_time";
    // Three controls: two see the succeeded deploy, one the failed one.
    let sources = [("X-01", "succeeded"), ("X-02", "failed"), ("X-03", "succeeded")].map(|(id, status)| {
        ControlSource { file: id.into(), sql: format!("-- id: {id}\n-- filter: status = '{status}'\n{header}{sql}") }
    });
    let (mut state, mut controls) = vigil::engine::plan(&catalog, &sources, &Default::default()).await.unwrap();
    let resolver = Arc::new(SchemaResolver::new(None, None).unwrap());
    let decoder =
        |t: Topic| Decoder::new(catalog.event(t).clone(), resolver.clone(), Format::Json, TimeBounds::default());
    let t = vigil::testing::T_MS;
    // A hundred commits with one build each, and a second build of c2: the
    // deploys want a few of a hundred, so ci is looked up by key.
    let builds: Vec<String> = (0..100)
        .chain([2])
        .enumerate()
        .map(|(i, c)| {
            format!(
                r#"{{"event_id":"b{i}","event_time":{t},"kind":"build","repo":"r","service":"s","commit_sha":"c{c}"}}"#
            )
        })
        .collect();
    let messages = builds.iter().enumerate().map(|(i, b)| RawMessage::new(Some(b.as_bytes()), 0, i as i64));
    state.append(Topic::Ci, decoder(Topic::Ci).decode(messages, t).batch.unwrap());
    let deploys: Vec<String> = [("d1", "c1", "succeeded"), ("d2", "c2", "failed")]
        .map(|(id, commit, status)| {
            format!(
                r#"{{"event_id":"e{id}","event_time":{t},"deploy_id":"{id}","service":"s","environment":"production",
                    "commit_sha":"{commit}","actor":"svc","automated":true,"status":"{status}"}}"#
            )
        })
        .to_vec();
    let messages = deploys.iter().enumerate().map(|(i, d)| RawMessage::new(Some(d.as_bytes()), 0, i as i64));
    controls.admit(Topic::Deploy, &decoder(Topic::Deploy).decode(messages, t).batch.unwrap(), None).unwrap();
    let evaluations = controls.evaluate(&state, t + 120_000).await.unwrap();
    let found: Vec<(usize, &str, &str)> = evaluations
        .iter()
        .flat_map(|e| e.findings.iter().map(move |f| (e.control, f.subject.as_str(), f.message.as_str())))
        .collect();
    assert_eq!(found, [(0, "d1", "builds 1"), (1, "d2", "builds 2"), (2, "d1", "builds 1")]);
    assert!(evaluations.iter().all(|e| e.read_in_part == 1), "ci must be read by key");
}

/// An engine over the built-in catalogue reading JSON on every topic, with
/// `identities` (principal, names) in its identity map.
async fn json_engine(identities: &[(&str, &str)]) -> vigil::engine::Engine {
    use vigil::config::{Config, RawConfig};
    let mut raw = RawConfig::default();
    for (principal, name) in identities {
        raw.identities.insert(principal.to_string(), vec![name.to_string()]);
    }
    for topic in vigil::schema::Topic::ALL {
        raw.formats.insert(topic.name().to_string(), vigil::decode::Format::Json);
    }
    vigil::engine::Engine::new(&Config::validate(raw).unwrap(), &builtin_sources()).await.unwrap()
}

/// A finished production deploy `dep-1` of commit `c0ffee` at `t`.
fn production_deploy(t: i64, actor: &str, automated: bool) -> String {
    serde_json::json!({"event_id": "d1", "event_time": t, "deploy_id": "dep-1", "service": "payments",
        "environment": "production", "commit_sha": "c0ffee", "artifact_digest": null, "actor": actor,
        "automated": automated, "change_id": null, "status": "succeeded"})
    .to_string()
}

/// The evidence record names the grant active at the deploy: not a later
/// grant's role that sorts last, not a grant revoked before the deploy,
/// not a grant that had expired.
#[tokio::test]
async fn evidence_names_the_grant_active_at_the_deploy() {
    use vigil::decode::RawMessage;
    use vigil::schema::Topic;
    let mut engine = json_engine(&[("carol", "carol@acme.example")]).await;
    let now = vigil::pipeline::wall_ms();
    // Two days back: past the evidence deadline (24h15m).
    let t = now - 2 * 86_400_000;
    let access = |id: &str, at: i64, action: &str, role: &str, expires: Option<i64>| {
        serde_json::json!({"event_id": id, "event_time": at, "action": action, "principal": "carol",
            "environment": "production", "role": role, "granted_by": "it", "change_id": null, "expires_at": expires})
        .to_string()
    };
    let events = [
        // "deployer" is active: granted, revoked, granted again.
        access("a1", t - 9_000_000, "granted", "deployer", None),
        access("a2", t - 8_000_000, "revoked", "deployer", None),
        access("a3", t - 7_000_000, "granted", "deployer", None),
        // "zz-admin" (sorts after "deployer") was revoked before the deploy.
        access("a4", t - 6_000_000, "granted", "zz-admin", None),
        access("a5", t - 5_000_000, "revoked", "zz-admin", None),
        // "zz-reader" had expired by the deploy.
        access("a6", t - 4_000_000, "granted", "zz-reader", Some(t - 1)),
    ];
    let raw: Vec<RawMessage> =
        events.iter().enumerate().map(|(i, e)| RawMessage::new(Some(e.as_bytes()), 0, i as i64)).collect();
    engine.ingest(Topic::Access, raw, now).await.unwrap();
    let deploy = production_deploy(t, "carol@acme.example", false);
    engine.ingest(Topic::Deploy, [RawMessage::new(Some(deploy.as_bytes()), 0, 0)], now).await.unwrap();
    let evaluations = engine.decide(now).await.unwrap();
    let controls = engine.controls.controls();
    let findings: Vec<_> =
        evaluations.iter().filter(|e| controls[e.control].meta.evidence).flat_map(|e| &e.findings).collect();
    assert_eq!(findings.len(), 1, "one evidence record for dep-1");
    let record = vigil::evidence::record_of(findings[0]).unwrap();
    assert_eq!(record.access_grant.as_deref(), Some("deployer granted a3"));
    // AC-01 agrees: the deploy held access.
    let ac01 = evaluations.iter().find(|e| controls[e.control].meta.id == "AC-01").unwrap();
    assert!(ac01.findings.is_empty(), "{:?}", ac01.findings);
}

/// The evidence record names a pull request as SOD-01 does, so that a
/// violation of SOD-01 links to the deploy's evidence: a merge without a
/// number (a squash pushed by a tool) by its commit.
#[tokio::test]
async fn evidence_names_a_merge_without_a_number_as_sod01_does() {
    use vigil::decode::RawMessage;
    use vigil::schema::Topic;
    let mut engine = json_engine(&[]).await;
    let now = vigil::pipeline::wall_ms();
    let t = now - 2 * 86_400_000;
    let merge = serde_json::json!({"event_id": "m1", "event_time": t - 60_000, "kind": "pr_merged",
        "service": "payments", "repo": "acme/payments", "commit_sha": "c0ffee", "pr_number": null, "actor": "alice-gh",
        "author": "alice-gh"})
    .to_string();
    engine.ingest(Topic::Ci, [RawMessage::new(Some(merge.as_bytes()), 0, 0)], now).await.unwrap();
    let deploy = production_deploy(t, "svc-deploybot", true);
    engine.ingest(Topic::Deploy, [RawMessage::new(Some(deploy.as_bytes()), 0, 0)], now).await.unwrap();
    let evaluations = engine.decide(now).await.unwrap();
    let controls = engine.controls.controls();
    let of = |pick: &dyn Fn(&vigil::controls::Control) -> bool| -> Vec<_> {
        evaluations.iter().filter(|e| pick(&controls[e.control])).flat_map(|e| &e.findings).collect()
    };
    let sod01 = of(&|c| c.meta.id == "SOD-01");
    assert_eq!(sod01.len(), 1, "the merge had no review: {sod01:?}");
    assert_eq!(sod01[0].subject, "acme/payments#c0ffee");
    let evidence = of(&|c| c.meta.evidence);
    assert_eq!(evidence.len(), 1, "one evidence record for dep-1");
    assert_eq!(vigil::evidence::related_subject(evidence[0], "SOD-01").as_deref(), Some("acme/payments#c0ffee"));
    let record = vigil::evidence::record_of(evidence[0]).unwrap();
    assert_eq!(record.pull_request.as_deref(), Some("acme/payments#c0ffee"));
}

/// Admitting copies only the trigger columns a control reads: what controls
/// sharing a filter read is there for each of them, and the decided
/// triggers keep the columns read by name outside the queries (the deploy
/// ids an evidence record's outcomes are judged by).
#[tokio::test]
async fn admitted_triggers_hold_what_their_readers_read() {
    use std::sync::Arc;
    use vigil::controls::ControlSource;
    use vigil::decode::{Decoder, Format, RawMessage, SchemaResolver, TimeBounds};
    use vigil::schema::Topic;
    use vigil::state::State;
    let catalog = Catalog::builtin().unwrap();
    let state = State::new(Topic::ALL.map(|t| &**catalog.event(t)));
    let header =
        "-- title: t\n-- severity: low\n-- trigger: deploy\n-- filter: environment = 'production'\n-- grace: 1m\n";
    let by_service = "SELECT d.service AS subject, d.service, d.event_time, 'x' AS message FROM due d";
    let by_digest = "SELECT d.artifact_digest AS subject, d.service, d.event_time, 'x' AS message FROM due d";
    let sources = [("X-01", by_service), ("X-02", by_digest)]
        .map(|(id, sql)| ControlSource { file: id.into(), sql: format!("-- id: {id}\n{header}{sql}") });
    let mut controls = ControlSet::plan(&sources, &catalog, &state, &Default::default()).await.unwrap();
    let resolver = Arc::new(SchemaResolver::new(None, None).unwrap());
    let decoder = Decoder::new(catalog.event(Topic::Deploy).clone(), resolver, Format::Json, TimeBounds::default());
    let t = vigil::testing::T_MS;
    let deploy = format!(
        r#"{{"event_id":"e0","event_time":{t},"deploy_id":"d0","service":"s","environment":"production",
            "commit_sha":"c","artifact_digest":"sha256:ab","actor":"svc","automated":true,"status":"succeeded"}}"#
    );
    let batch = decoder.decode([RawMessage::new(Some(deploy.as_bytes()), 0, 0)], t).batch.unwrap();
    controls.admit(Topic::Deploy, &batch, None).unwrap();
    let evaluations = controls.evaluate(&state, t + 120_000).await.unwrap();
    let subjects: Vec<&str> = evaluations.iter().flat_map(|e| e.findings.iter().map(|f| f.subject.as_str())).collect();
    assert_eq!(subjects, ["s", "sha256:ab"]);
    let wanted: foldhash::HashSet<&str> = ["d0", "d1"].into_iter().collect();
    let judged = controls.decided_among(0, "deploy_id", &wanted);
    assert_eq!(judged, ["d0"].into_iter().collect());
}
