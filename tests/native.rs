//! Tool-native payloads (in the tools' published shapes, tests/payloads/)
//! mapped onto canonical events, as `vigil decode` shows them.

use std::process::Command;

use serde_json::Value;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn decode(format: &str, topic: &str, file: &str) -> (Option<i32>, Vec<Value>, String) {
    let out = Command::new(VIGIL).args(["decode", "--format", format, "--topic", topic, file]).output().unwrap();
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
    assert!(stderr.contains("does not map onto the access topic"), "{stderr}");
}
