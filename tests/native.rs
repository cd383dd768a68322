//! Tool-native payloads (in the tools' published shapes, tests/payloads/)
//! mapped onto canonical events, as `vigil decode` shows them.

use std::process::Command;

use serde_json::Value;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn decode(format: &str, topic: &str, file: &str) -> (Option<i32>, Vec<Value>, String) {
    decode_with(&["--format", format, "--topic", topic, file])
}

/// `vigil decode` with the test payloads' [native] config and `args`.
fn decode_with(args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    decode_using("tests/payloads/native.toml", args)
}

/// `vigil decode --config CONFIG` and `args`.
fn decode_using(config: &str, args: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let out = Command::new(VIGIL).args(["decode", "--config", config]).args(args).output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (out.status.code(), lines, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_merged_github_pull_request_yields_the_merge_commit_author_and_number() {
    let (code, events, _) = decode("github", "ci", "tests/payloads/github-pull-request-merged.json");
    assert_eq!(code, Some(0));
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["kind"], "pr_merged");
    assert_eq!(e["commit_sha"], "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6");
    assert_eq!(e["author"], "alice-gh");
    assert_eq!(e["pr_number"], 42);
    assert_eq!(e["actor"], "bob-gh");
    assert_eq!(e["repo"], "acme/payments");
}

#[test]
fn a_pull_request_closed_without_merging_maps_to_nothing() {
    let (code, events, stderr) = decode("github", "ci", "tests/payloads/github-pull-request-closed-unmerged.json");
    assert_eq!(code, Some(0));
    assert!(events.is_empty());
    assert!(stderr.contains("nothing Vigil uses"), "{stderr}");
}

#[test]
fn a_cdevents_service_deployed_yields_service_environment_and_digest() {
    let (code, events, _) = decode("cdevents", "deploy", "tests/payloads/cdevents-service-deployed.json");
    assert_eq!(code, Some(0));
    let e = &events[0];
    assert_eq!(e["service"], "mySubject123");
    assert_eq!(e["environment"], "test123");
    assert_eq!(e["artifact_digest"], "sha256:0b31b1c02ff458ad9b7b81cbdf8f028bd54699fa151f221d1e8de6817db93427");
    assert_eq!(e["status"], "succeeded");
    assert!(e["event_id"].as_str().unwrap().contains("271069a8-fc18-44f1-b38f-9d70a1695819"));
}

#[test]
fn a_github_deployment_status_yields_a_deploy_with_its_commit_and_deployer() {
    let (code, events, _) = decode("github", "deploy", "tests/payloads/github-deployment-status-success.json");
    assert_eq!(code, Some(0));
    let e = &events[0];
    assert_eq!(e["status"], "succeeded");
    assert_eq!(e["environment"], "production");
    assert_eq!(e["deploy_id"], "acme/payments/deployments/145988746");
    assert_eq!(e["commit_sha"], "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6");
    assert_eq!(e["actor"], "carol-gh");
    assert_eq!(e["automated"], false);
    assert_eq!(e["change_id"], "CHG-9");
}

#[test]
fn a_cdevents_test_suite_run_yields_a_test_of_the_commit_and_without_one_is_ignored_saying_why() {
    let (code, events, _) = decode("cdevents", "ci", "tests/payloads/cdevents-testsuiterun-finished.json");
    assert_eq!(code, Some(0));
    let e = &events[0];
    assert_eq!((e["kind"].as_str(), e["outcome"].as_str()), (Some("test"), Some("success")));
    assert_eq!(e["commit_sha"], "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6");
    assert_eq!(e["service"], "payments");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string("tests/payloads/cdevents-testsuiterun-finished.json").unwrap();
    let no_commit = dir.path().join("no-commit.json");
    std::fs::write(&no_commit, text.replace("\"commit_sha\"", "\"commit\"")).unwrap();
    let (code, events, stderr) = decode("cdevents", "ci", no_commit.to_str().unwrap());
    assert_eq!((code, events.len()), (Some(0), 0), "{stderr}");
    assert!(stderr.contains("nothing Vigil uses") && stderr.contains("customData.commit_sha"), "{stderr}");
}

/// The CDEvents spec's own events, which carry no customData, map with what
/// they carry: an artifact packaged is a build of its digest (commit
/// unknown, service from its purl); a review with no verdict is never an
/// approval; the newer `deployment` subject is a deploy; a test suite run
/// naming no commit is ignored with why.
#[test]
fn cdevents_as_the_spec_writes_them_map_with_what_they_carry() {
    let digest = "sha256:7e42b1c02ff458ad9b7b81cbdf8f028bd54699fa151f221d1e8de6817db93427";
    let e = one("ci", "tests/payloads/cdevents-spec-artifact-packaged.json");
    assert_eq!((e["kind"].as_str(), e["outcome"].as_str()), (Some("build"), Some("success")));
    assert_eq!((e["artifact_digest"].as_str(), e["service"].as_str()), (Some(digest), Some("payments")));
    assert_eq!(e["commit_sha"], "", "the commit is unknown, not invented");

    let e = one("ci", "tests/payloads/cdevents-spec-change-reviewed.json");
    assert_eq!(e["kind"], "pr_review");
    assert_eq!(e["review_state"], "commented", "a review with no verdict is no approval");

    let e = one("deploy", "tests/payloads/cdevents-spec-deployment-finished.json");
    assert_eq!((e["service"].as_str(), e["environment"].as_str()), (Some("payments"), Some("production")));
    assert_eq!((e["status"].as_str(), e["artifact_digest"].as_str()), (Some("succeeded"), Some(digest)));
    assert_eq!(e["deploy_id"], "deploy-payments-prod-311");
    assert_eq!(e["commit_sha"], "");

    let (code, events, stderr) = decode("auto", "ci", "tests/payloads/cdevents-spec-testsuiterun-finished.json");
    assert_eq!((code, events.len()), (Some(0), 0), "{stderr}");
    assert!(stderr.contains("tested nothing known"), "{stderr}");
}

#[test]
fn a_critical_code_scanning_alert_yields_a_critical_sast_finding_for_the_commit() {
    let (code, events, _) = decode("github", "ci", "tests/payloads/github-code-scanning-alert-created.json");
    assert_eq!(code, Some(0));
    let e = &events[0];
    assert_eq!((e["kind"].as_str(), e["scan_type"].as_str()), (Some("scan"), Some("sast")));
    assert_eq!(e["commit_sha"], "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6");
    assert_eq!(e["findings_critical"], 1);
}

#[test]
fn a_servicenow_change_request_yields_its_approval_and_window() {
    let (code, events, _) = decode("servicenow", "change", "tests/payloads/servicenow-change-approved.json");
    assert_eq!(code, Some(0));
    let e = &events[0];
    assert_eq!((e["change_id"].as_str(), e["action"].as_str()), (Some("CHG0030001"), Some("approved")));
    assert_eq!(e["actor"], "maria@acme.example");
    assert_eq!(e["service"], "payments");
    assert_eq!(
        (e["window_start"].as_str(), e["window_end"].as_str()),
        (Some("2026-11-20T10:00:00Z"), Some("2026-11-20T14:00:00Z"))
    );
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string("tests/payloads/servicenow-change-approved.json").unwrap();
    let canceled = dir.path().join("canceled.json");
    std::fs::write(&canceled, text.replace("\"state\": \"-2\"", "\"state\": \"4\"")).unwrap();
    let (_, events, _) = decode("servicenow", "change", canceled.to_str().unwrap());
    assert_eq!(events[0]["action"], "cancelled");
}

/// The Table API with `sysparm_display_value=all`: every field a
/// `{display_value, value}` pair, references with their link, in a `result`
/// envelope; an empty `business_service` does not hide a filled `cmdb_ci`.
#[test]
fn a_servicenow_table_api_record_reads_values_and_names_and_skips_empty_references() {
    let (code, events, stderr) = decode("servicenow", "change", "tests/payloads/servicenow-table-api-display-all.json");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!((e["change_id"].as_str(), e["action"].as_str()), (Some("CHG0030002"), Some("approved")));
    assert_eq!(e["change_type"], "emergency", "the choice's value, not its display");
    assert_eq!(e["service"], "payments", "cmdb_ci's name, business_service being empty");
    assert_eq!(e["requester"], "alice@acme.example", "a reference by its display value, not its sys_id");
    assert_eq!(e["actor"], "maria@acme.example");
    assert_eq!(e["event_time"], "2026-11-20T09:30:00Z", "dates by their UTC value, not the user's display");
    assert_eq!(e["window_start"], "2026-11-20T10:00:00Z");
    assert_eq!(e["event_id"], "servicenow:c83c5e5347c12200e0ef563dbb9a7190:9");
    // The same through --format auto.
    let (code, auto, stderr) = decode("auto", "change", "tests/payloads/servicenow-table-api-display-all.json");
    assert_eq!((code, &auto), (Some(0), &events), "{stderr}");
}

/// A Table API list: one change event per record, each by its own fields.
#[test]
fn a_servicenow_table_api_list_yields_one_event_per_record() {
    let (code, events, stderr) = decode("auto", "change", "tests/payloads/servicenow-table-api-list.json");
    assert_eq!(code, Some(0), "{stderr}");
    let got: Vec<_> =
        events.iter().map(|e| (e["change_id"].as_str(), e["action"].as_str(), e["service"].as_str())).collect();
    assert_eq!(
        got,
        [(Some("CHG0000024"), Some("created"), Some("payments")), (Some("CHG0000025"), Some("closed"), Some("ledger"))]
    );
    assert!(events[0].get("window_start").is_none(), "an empty date is no window");
}

/// Shapes that cannot say what Vigil needs are refused with what to ask
/// for instead: a reference sent as a bare sys_id link, and dates sent
/// only as display values (in the asking user's time zone).
#[test]
fn a_servicenow_record_without_names_or_utc_dates_is_refused_saying_how_to_ask() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string("tests/payloads/servicenow-table-api-display-all.json").unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let record = &mut v["result"];
    record["cmdb_ci"].as_object_mut().unwrap().remove("display_value");
    let unnamed = dir.path().join("unnamed.json");
    std::fs::write(&unnamed, v.to_string()).unwrap();
    let (code, _, stderr) = decode("servicenow", "change", unnamed.to_str().unwrap());
    assert_ne!(code, Some(0));
    assert!(stderr.contains("cmdb_ci") && stderr.contains("sysparm_display_value=all"), "{stderr}");

    let mut v: Value = serde_json::from_str(&text).unwrap();
    let record = v["result"].as_object_mut().unwrap();
    for (_, field) in record.iter_mut() {
        if let Some(o) = field.as_object_mut() {
            o.remove("value");
        }
    }
    let display = dir.path().join("display.json");
    std::fs::write(&display, v.to_string()).unwrap();
    let (code, _, stderr) = decode("servicenow", "change", display.to_str().unwrap());
    assert_ne!(code, Some(0));
    assert!(stderr.contains("time zone"), "{stderr}");
}

/// `vigil decode --config` holds payloads to the config's `[decode]`
/// bounds, as `vigil run` does: an event older than `max_event_age` and a
/// payload over `max_message_bytes` are refused, naming the setting.
#[test]
fn decode_honours_the_decode_bounds_of_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let native = std::fs::read_to_string("tests/payloads/native.toml").unwrap();
    let file = "tests/payloads/servicenow-change-approved.json";
    let config = |decode: &str| {
        let path = dir.path().join(format!("vigil-{}.toml", decode.len()));
        std::fs::write(&path, format!("{native}\n[decode]\n{decode}\n")).unwrap();
        path
    };
    let run = |config: &std::path::Path| {
        let (code, _, stderr) =
            decode_using(config.to_str().unwrap(), &["--format", "servicenow", "--topic", "change", file]);
        (code, stderr)
    };
    // The payload's event is from 2026-11-20; ten years of age pass it.
    assert_eq!(run(&config("max_event_age = \"3650d\"")).0, Some(0));
    let (code, stderr) = run(&config("max_event_age = \"1h\""));
    assert_ne!(code, Some(0), "an event older than max_event_age passed: {stderr}");
    let (code, stderr) = run(&config("max_message_bytes = 100"));
    assert_ne!(code, Some(0));
    assert!(stderr.contains("max_message_bytes"), "{stderr}");
}

/// A Jira change with no component or label takes its service from the
/// configured project map; with neither, it is refused naming the setting.
#[test]
fn a_jira_issue_without_component_or_label_takes_its_projects_service() {
    let dir = tempfile::tempdir().unwrap();
    let bare = edited(&dir, "tests/payloads/jira-issue-approved.json", |v| {
        v["issue"]["fields"]["components"] = serde_json::json!([]);
        v["issue"]["fields"]["labels"] = serde_json::json!([]);
    });
    let (code, _, stderr) = decode("jira", "change", &bare);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("[native.jira] projects = { CHG = "), "{stderr}");
    let config = dir.path().join("vigil.toml");
    let native = std::fs::read_to_string("tests/payloads/native.toml").unwrap();
    std::fs::write(&config, format!("{native}\n[native.jira]\nprojects = {{ CHG = \"ledger\" }}\n")).unwrap();
    let (code, events, stderr) =
        decode_using(config.to_str().unwrap(), &["--format", "auto", "--topic", "change", &bare]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(events[0]["service"], "ledger");
    // A component, when there is one, still names the service.
    let (_, events, _) = decode("jira", "change", "tests/payloads/jira-issue-approved.json");
    assert_eq!(events[0]["service"], "payments");
}

#[test]
fn a_jira_status_transition_yields_the_change_action_and_approver() {
    let (code, events, _) = decode("jira", "change", "tests/payloads/jira-issue-approved.json");
    assert_eq!(code, Some(0));
    let e = &events[0];
    assert_eq!(e["change_id"], "CHG-9");
    assert_eq!(e["action"], "approved");
    assert_eq!(e["actor"], "maria@acme.example", "the changelog's author approves");
    assert_eq!(e["requester"], "alice@acme.example");
    assert_eq!(e["service"], "payments");
}

#[test]
fn a_truncated_or_misrouted_payload_exits_non_zero_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read("tests/payloads/cdevents-service-deployed.json").unwrap();
    let cut = dir.path().join("cut.json");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let (code, events, stderr) = decode("cdevents", "deploy", cut.to_str().unwrap());
    assert_eq!(code, Some(1));
    assert!(events.is_empty());
    assert!(stderr.contains("cut.json") && stderr.contains("not valid JSON"), "{stderr}");

    let (code, _, stderr) = decode("cdevents", "access", "tests/payloads/cdevents-service-deployed.json");
    assert_eq!(code, Some(1));
    assert!(stderr.contains("maps onto the deploy topic, not access"), "{stderr}");
}

/// The one event `vigil decode` makes of a payload (any format, auto-detected).
fn one(topic: &str, file: &str) -> Value {
    let (code, events, stderr) = decode("auto", topic, file);
    assert_eq!(code, Some(0), "{file}: {stderr}");
    assert_eq!(events.len(), 1, "{file}: {events:?}");
    events.into_iter().next().unwrap()
}

/// Rewrites a test payload with `edit` into `dir`; returns its path.
fn edited(dir: &tempfile::TempDir, file: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    edit(&mut v);
    let path = dir.path().join(std::path::Path::new(file).file_name().unwrap());
    std::fs::write(&path, v.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

/// Without the X-GitHub-Event header: a deployment status created by GitHub
/// Actions carries the workflow run (and check run) behind it and is still
/// a deploy; a push or issue event is GitHub's and says nothing Vigil uses;
/// a workflow run with an empty name is classified by its workflow's path.
#[test]
fn github_payloads_without_their_event_header_are_told_by_shape() {
    let dir = tempfile::tempdir().unwrap();
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/payloads/github-workflow-run-completed.json").unwrap())
            .unwrap();
    let check: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/payloads/github-check-run-completed.json").unwrap())
            .unwrap();
    let (_, want, _) = decode("github", "deploy", "tests/payloads/github-deployment-status-success.json");
    let by_actions = edited(&dir, "tests/payloads/github-deployment-status-success.json", |v| {
        v["workflow_run"] = run["workflow_run"].clone();
        v["workflow"] = run["workflow"].clone();
        v["check_run"] = check["check_run"].clone();
    });
    for format in ["github", "auto"] {
        let (code, got, stderr) = decode(format, "deploy", &by_actions);
        assert_eq!((code, &got), (Some(0), &want), "{format}: {stderr}");
    }

    let push = dir.path().join("push.json");
    std::fs::write(
        &push,
        serde_json::json!({
            "ref": "refs/heads/main", "before": "0".repeat(40), "after": "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6",
            "repository": run["repository"], "pusher": {"name": "alice-gh"}, "sender": run["sender"], "commits": []
        })
        .to_string(),
    )
    .unwrap();
    let (code, events, stderr) = decode("github", "ci", push.to_str().unwrap());
    assert_eq!((code, events.len()), (Some(0), 0), "{stderr}");
    assert!(stderr.contains("nothing Vigil uses"), "{stderr}");
    let not_github = dir.path().join("other.json");
    std::fs::write(&not_github, r#"{"hello": "world"}"#).unwrap();
    assert_ne!(decode("github", "ci", not_github.to_str().unwrap()).0, Some(0), "a non-GitHub payload is refused");

    let unnamed = edited(&dir, "tests/payloads/github-workflow-run-completed.json", |v| {
        v["workflow_run"]["name"] = "".into();
        v["workflow_run"]["path"] = ".github/workflows/test.yml".into();
        v["workflow"]["name"] = "".into();
        v["workflow"]["path"] = ".github/workflows/test.yml".into();
    });
    let (code, events, stderr) = decode("github", "ci", &unnamed);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(events[0]["kind"], "test", "named by its path, which the test_names match");
}

#[test]
fn github_runs_are_tests_builds_or_scans_by_their_names() {
    let e = one("ci", "tests/payloads/github-workflow-run-completed.json");
    assert_eq!((e["kind"].as_str(), e["outcome"].as_str()), (Some("test"), Some("success")), "{e}");
    assert_eq!(e["commit_sha"], "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6");
    assert_eq!(e["actor"], "bob-gh");
    assert_eq!(e["event_id"], "github:acme/payments:actions/runs/30433642/attempts/1");
    let e = one("ci", "tests/payloads/github-check-run-completed.json");
    assert_eq!((e["kind"].as_str(), e["outcome"].as_str()), (Some("test"), Some("failure")), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let codeql = dir.path().join("codeql.json");
    let text = std::fs::read_to_string("tests/payloads/github-check-run-completed.json").unwrap();
    std::fs::write(&codeql, text.replace("\"unit-tests\"", "\"CodeQL\"").replace("\"failure\"", "\"success\""))
        .unwrap();
    let e = one("ci", codeql.to_str().unwrap());
    assert_eq!((e["kind"].as_str(), e["scan_type"].as_str()), (Some("scan"), Some("sast")), "{e}");
}

#[test]
fn a_github_deployment_created_is_a_deploy_started() {
    let e = one("deploy", "tests/payloads/github-deployment-created.json");
    assert_eq!(e["status"], "started");
    assert_eq!(e["deploy_id"], "acme/payments/deployments/145988746");
    assert_eq!(e["change_id"], "CHG-9");
}

#[test]
fn cdevents_builds_artifacts_and_tickets_map_onto_ci_and_change() {
    let digest = "sha256:0b31b1c02ff458ad9b7b81cbdf8f028bd54699fa151f221d1e8de6817db93427";
    let e = one("ci", "tests/payloads/cdevents-pipelinerun-finished.json");
    assert_eq!((e["kind"].as_str(), e["outcome"].as_str()), (Some("build"), Some("success")), "{e}");
    assert_eq!(e["artifact_digest"], digest);
    let e = one("ci", "tests/payloads/cdevents-artifact-packaged.json");
    assert_eq!((e["kind"].as_str(), e["artifact_digest"].as_str()), (Some("build"), Some(digest)), "{e}");
    let e = one("change", "tests/payloads/cdevents-ticket-created.json");
    assert_eq!(e["action"], "created");
    assert_eq!(e["change_id"], "CHG-77");
    assert_eq!(e["requester"], "alice@acme.example");
    assert_eq!(e["change_type"], "normal");
    assert_eq!(e["service"], "payments");
    assert_eq!(e["window_start"], "2026-11-20T11:00:00Z");
    let e = one("change", "tests/payloads/cdevents-ticket-updated-approved.json");
    assert_eq!((e["action"].as_str(), e["actor"].as_str()), (Some("approved"), Some("maria@acme.example")), "{e}");
    let e = one("change", "tests/payloads/cdevents-ticket-closed.json");
    assert_eq!(e["action"], "closed");
    // An incident is a valid CDEvent no control reads: nothing, exit 0.
    let (code, events, stderr) = decode("cdevents", "change", "tests/payloads/cdevents-incident-reported.json");
    assert_eq!((code, events.len()), (Some(0), 0), "{stderr}");
}

#[test]
fn a_binary_mode_cloudevent_takes_its_context_from_the_ce_headers() {
    let file = "tests/payloads/cdevents-binary-service-deployed.json";
    let (code, _, stderr) = decode("cdevents", "deploy", file);
    assert_eq!(code, Some(1), "without headers there is no context");
    assert!(stderr.contains("ce_type"), "{stderr}");
    let (code, events, stderr) = decode_with(&[
        "--topic",
        "deploy",
        "--header",
        "ce_specversion=1.0",
        "--header",
        "ce_type=dev.cdevents.service.deployed.0.2.0",
        "--header",
        "ce_source=/deploy/spinnaker",
        "--header",
        "ce_id=5a1c",
        "--header",
        "ce_time=2026-11-20T12:30:00Z",
        file,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let e = &events[0];
    assert_eq!(e["event_id"], "cdevents:/deploy/spinnaker:5a1c");
    assert_eq!(e["event_time"], "2026-11-20T12:30:00Z");
    assert_eq!((e["service"].as_str(), e["environment"].as_str()), (Some("payments"), Some("production")));
    assert_eq!((e["deploy_id"].as_str(), e["automated"].as_bool()), (Some("spin-4411"), Some(true)));
}

/// An Okta Event Hook delivery: every System Log event inside it is
/// mapped (a login is not access; both grants are), in order, and
/// `--format auto` tells the envelope for Okta.
#[test]
fn an_okta_event_hook_delivery_maps_every_event_inside_it() {
    for format in ["okta", "auto"] {
        let (code, events, stderr) = decode(format, "access", "tests/payloads/okta-event-hook.json");
        assert_eq!(code, Some(0), "{format}: {stderr}");
        let got: Vec<_> =
            events.iter().map(|e| (e["principal"].as_str(), e["action"].as_str(), e["role"].as_str())).collect();
        assert_eq!(
            got,
            [
                (Some("carol@acme.example"), Some("granted"), Some("prod-deployers")),
                (Some("dave@acme.example"), Some("elevated"), Some("prod-break-glass"))
            ],
            "{format}"
        );
    }
    // A grant inside it that names no user refuses the delivery, saying which.
    let dir = tempfile::tempdir().unwrap();
    let mut hook: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/payloads/okta-event-hook.json").unwrap()).unwrap();
    hook["data"]["events"][2]["target"].as_array_mut().unwrap().remove(0);
    let broken = dir.path().join("hook.json");
    std::fs::write(&broken, hook.to_string()).unwrap();
    let (code, _, stderr) = decode("okta", "access", broken.to_str().unwrap());
    assert_ne!(code, Some(0));
    assert!(stderr.contains("data.events[2]"), "{stderr}");
}

/// `--format auto` sends what each tool sends to that tool's mapper: a Jira
/// comment event is Jira's (and says nothing Vigil uses), and a Kubernetes
/// audit line a shipper stripped of apiVersion and kind is still an audit
/// event.
#[test]
fn auto_tells_jira_comments_and_bare_audit_lines_apart_from_canonical_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut comment: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/payloads/jira-issue-approved.json").unwrap()).unwrap();
    comment["webhookEvent"] = "comment_created".into();
    comment.as_object_mut().unwrap().remove("changelog");
    comment["comment"] = serde_json::json!({"id": "10020", "body": "=HYPERLINK(\"x\")", "author": {"name": "eve"}});
    let path = dir.path().join("comment.json");
    std::fs::write(&path, comment.to_string()).unwrap();
    let (code, events, stderr) = decode("auto", "change", path.to_str().unwrap());
    assert_eq!((code, events.len()), (Some(0), 0), "{stderr}");
    assert!(stderr.contains("nothing Vigil uses"), "{stderr}");

    let (code, want, _) = decode("kubernetes-audit", "deploy", "tests/payloads/k8s-audit-deployment-patch.json");
    assert_eq!((code, want.len()), (Some(0), 1));
    let mut bare: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/payloads/k8s-audit-deployment-patch.json").unwrap())
            .unwrap();
    bare.as_object_mut().unwrap().remove("apiVersion");
    bare.as_object_mut().unwrap().remove("kind");
    let path = dir.path().join("bare-audit.json");
    std::fs::write(&path, bare.to_string()).unwrap();
    let (code, got, stderr) = decode("auto", "deploy", path.to_str().unwrap());
    assert_eq!((code, &got), (Some(0), &want), "{stderr}");
}

#[test]
fn okta_grants_are_production_access_only_for_the_configured_groups() {
    let e = one("access", "tests/payloads/okta-group-membership-add.json");
    assert_eq!(e["action"], "granted");
    assert_eq!(e["principal"], "carol@acme.example");
    assert_eq!(e["granted_by"], "maria@acme.example");
    assert_eq!(e["role"], "prod-deployers");
    assert_eq!(e["environment"], "production");
    assert_eq!(e["change_id"], "AR-5521", "the configured request_field");
    assert_eq!(e["event_id"], "okta:f9a5f4f2-c1f5-11ec-8e2b-5b6b5e3f9c0a");
    let e = one("access", "tests/payloads/okta-privilege-grant.json");
    assert_eq!((e["action"].as_str(), e["role"].as_str()), (Some("granted"), Some("okta-admin: Super administrator")));
    let (code, events, _) = decode("okta", "access", "tests/payloads/okta-group-membership-add-unlisted.json");
    assert_eq!((code, events.len()), (Some(0), 0), "a group that is not production access");
    // Without the config no group is production access.
    let out = Command::new(VIGIL)
        .args(["decode", "--format", "okta", "--topic", "access", "tests/payloads/okta-group-membership-add.json"])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stdout.is_empty());
}

#[test]
fn a_kubernetes_audit_patch_by_a_person_is_a_shadow_deploy() {
    let e = one("deploy", "tests/payloads/k8s-audit-deployment-patch.json");
    assert_eq!((e["service"].as_str(), e["environment"].as_str()), (Some("payments"), Some("production")));
    assert_eq!((e["actor"].as_str(), e["automated"].as_bool()), (Some("carol@acme.example"), Some(false)));
    assert_eq!(e["commit_sha"], "", "no pipeline, no commit");
    assert_eq!(e["artifact_digest"], "sha256:5d0a5f2b9c8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7c6b5a4938271605f4e");
    let (code, events, _) =
        decode("kubernetes-audit", "deploy", "tests/payloads/k8s-audit-deployment-patch-by-argocd.json");
    assert_eq!((code, events.len()), (Some(0), 0), "the pipeline's own change");
}

#[test]
fn an_unknown_format_is_named_with_the_choices() {
    let (code, _, stderr) = decode("gitlab", "ci", "tests/payloads/github-pull-request-merged.json");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown format `gitlab`") && stderr.contains("kubernetes-audit"), "{stderr}");
}

/// The Argo CD notification template (deploy/argocd/) rendered for an
/// Application the way Argo CD's Go templates would (the subset it uses:
/// fields, `index`, `default`, `toJson`), then mapped: the template and the
/// mapper agree on every field.
#[test]
fn the_argocd_template_renders_what_the_mapper_reads() {
    let app: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/payloads/argocd-application.json").unwrap()).unwrap();
    let yaml = std::fs::read_to_string("deploy/argocd/vigil-notifications.yaml").unwrap();
    let body: String = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("body: |"))
        .skip(1)
        .take_while(|l| l.starts_with("          "))
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    assert!(body.contains("\"records\""), "the template's body was not found");
    let rendered = render(&body, &serde_json::json!({ "app": app }));
    let posted: Value = serde_json::from_str(&rendered).unwrap_or_else(|e| panic!("{e}:\n{rendered}"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("argocd.json");
    std::fs::write(&file, posted["records"][0]["value"].to_string()).unwrap();
    let e = one("deploy", file.to_str().unwrap());
    assert_eq!(e["service"], "payments");
    assert_eq!(e["environment"], "production");
    assert_eq!(e["commit_sha"], "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6");
    assert_eq!(e["artifact_digest"], "sha256:0b31b1c02ff458ad9b7b81cbdf8f028bd54699fa151f221d1e8de6817db93427");
    assert_eq!((e["actor"].as_str(), e["automated"].as_bool()), (Some("carol@acme.example"), Some(false)));
    assert_eq!((e["status"].as_str(), e["change_id"].as_str()), (Some("succeeded"), Some("CHG-77")));
    assert_eq!(e["deploy_id"], "argocd:payments-prod:2026-11-20T12:00:00Z");
    assert_eq!(e["event_time"], "2026-11-20T12:03:10Z");
}

/// Renders `{{ … }}` actions of a Go text/template over `data`.
fn render(template: &str, data: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").unwrap() + start;
        out.push_str(&eval(rest[start + 2..end].trim(), data));
        rest = &rest[end + 2..];
    }
    out + rest
}

fn eval(action: &str, data: &Value) -> String {
    let field = |path: &str| -> Option<Value> {
        path.trim_start_matches('.').split('.').try_fold(data.clone(), |v, k| v.get(k).cloned())
    };
    let mut value: Option<Value> = None;
    for stage in action.split('|').map(str::trim) {
        let words: Vec<&str> = stage.split_whitespace().collect();
        value = match words.as_slice() {
            ["index", path, key] => field(path).and_then(|m| m.get(key.trim_matches('"')).cloned()),
            ["toJson", path] => Some(Value::String(field(path).unwrap_or(Value::Null).to_string())),
            ["default", fallback] => {
                let empty = value.as_ref().is_none_or(|v| v.is_null() || v == "" || v == &Value::Bool(false));
                if !empty {
                    value
                } else if fallback.starts_with('.') {
                    field(fallback)
                } else {
                    Some(serde_json::from_str(fallback).unwrap())
                }
            }
            [path] => field(path),
            _ => panic!("unsupported template action `{action}`"),
        };
    }
    match value {
        Some(Value::String(s)) => s,
        Some(v) => v.to_string(),
        None => "<no value>".into(),
    }
}

/// The stream: ci carries GitHub webhooks and deploy carries CDEvents, as
/// configured per topic; the processor maps them and decides on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_payloads_in_the_stream_are_mapped_and_decided() {
    use std::time::Duration;
    use vigil::config::{Config, RawConfig};
    use vigil::controls::builtin_sources;
    use vigil::decode::Format;
    use vigil::embedded::{produce_all, read_all, EmbeddedBroker, Record};
    use vigil::native::NativeFormat;
    use vigil::pipeline::{wall_ms, Pipeline};
    use vigil::violation::{violation_id, Violation};

    let broker = EmbeddedBroker::start().unwrap();
    let bootstrap = broker.bootstrap_servers();
    for topic in ["change", "ci", "access", "deploy", "vigil-violations", "vigil-dead-letter", "vigil-evidence"] {
        broker.create_topic(topic, 1).unwrap();
    }
    let day = 86_400_000;
    let at = |ms: i64| vigil::decode::format_ms(ms);
    let t = (wall_ms() / 1000) * 1000 - 2 * day;
    let merged = std::fs::read_to_string("tests/payloads/github-pull-request-merged.json")
        .unwrap()
        .replace("2026-11-20T10:05:00Z", &at(t - 3_600_000));
    let unmerged = std::fs::read_to_string("tests/payloads/github-pull-request-closed-unmerged.json").unwrap();
    let deployed = std::fs::read_to_string("tests/payloads/cdevents-service-deployed.json")
        .unwrap()
        .replace("2023-03-20T14:27:05.315384Z", &at(t))
        .replace("\"test123\"", "\"production\"");
    let truncated = deployed[..deployed.len() / 2].to_string();
    // The requester approves their own change: CM-03, from a Jira webhook.
    let self_approved = std::fs::read_to_string("tests/payloads/jira-issue-approved.json")
        .unwrap()
        .replace("1795000000000", &(t - 7_200_000).to_string())
        .replace("maria@acme.example", "alice@acme.example")
        .replace("CHG-9", "CHG-10");
    let record = |topic: &str, payload: &str| Record {
        topic: topic.into(),
        key: "payments".into(),
        payload: payload.into(),
        headers: Vec::new(),
    };
    produce_all(
        &bootstrap,
        &[
            record("ci", &merged),
            record("ci", &unmerged),
            record("deploy", &deployed),
            record("deploy", &truncated),
            record("change", &self_approved),
        ],
    )
    .await
    .unwrap();

    let mut raw = RawConfig::default();
    raw.kafka.bootstrap_servers = bootstrap.clone();
    raw.time.tick = Some("200ms".into());
    raw.time.idle_timeout = Some("1s".into());
    raw.formats.insert("ci".into(), Format::Native(NativeFormat::Github));
    raw.formats.insert("deploy".into(), Format::Native(NativeFormat::Cdevents));
    raw.formats.insert("change".into(), Format::Native(NativeFormat::Jira));
    let config = Config::validate(raw).unwrap();
    let metrics = vigil::metrics::Metrics::new();
    let pipeline = Pipeline::new(config, &builtin_sources(), metrics.clone()).await.unwrap();
    let mut status = pipeline.status();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(pipeline.run(stop_rx));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = status.borrow_and_update().clone();
        if s.consumed >= 5 && s.pending_triggers == 0 && s.watermark.is_some_and(|w| w > t + day) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not decided: {s:?}");
        let _ = tokio::time::timeout(Duration::from_millis(200), status.changed()).await;
    }
    let _ = stop_tx.send(true);
    running.await.unwrap().unwrap();

    let catalog = vigil::schema::Catalog::builtin().unwrap();
    let b = bootstrap.clone();
    let records = tokio::task::spawn_blocking(move || read_all(&b, "vigil-violations", Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap();
    let ids: std::collections::BTreeSet<String> = records
        .iter()
        .map(|r| Violation::from_confluent_avro(&catalog.violation, r.payload.as_deref().unwrap()).unwrap().id)
        .collect();
    // The merge had no approving review; the deploy names no change request.
    assert!(ids.contains(&violation_id("SOD-01", "acme/payments#42")), "{ids:?}");
    assert!(ids.contains(&violation_id("CM-01", "271069a8-fc18-44f1-b38f-9d70a1695819")), "{ids:?}");
    assert!(ids.contains(&violation_id("CM-03", "CHG-10")), "{ids:?}");
    let text = metrics.render();
    assert_eq!(vigil::metrics::sample_sum(&text, "vigil_events_ignored_total"), 1.0, "the unmerged pull request");
    assert_eq!(vigil::metrics::sample_sum(&text, "vigil_dead_letters_total"), 1.0, "the truncated CDEvent");
}
