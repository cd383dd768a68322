//! A scenario written only in tools' own formats — CDEvents (structured and
//! binary mode), GitHub webhooks, Jira, ServiceNow, Okta System Log, Argo CD
//! notifications and Kubernetes audit events, in tests/scenarios/native.jsonl
//! — produced to Apache Kafka and read by `vigil run` with every
//! topic on `auto`: the violations must be exactly those in
//! tests/scenarios/native.expected, the irrelevant events counted as
//! ignored and the one truncated payload dead-lettered.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{compare, free_port, kafka_with_topics, scrape, start_vigil, wait_for_output};
use vigil::embedded::{produce_all, Record};

/// The scenario's records, with their headers.
fn records() -> Vec<Record> {
    let text = std::fs::read_to_string("tests/scenarios/native.jsonl").unwrap();
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let r: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("native.jsonl:{}: {e}", i + 1));
            let headers = r["headers"].as_object().unwrap();
            Record {
                topic: r["topic"].as_str().unwrap().into(),
                key: r["key"].as_str().unwrap().into(),
                payload: r["value"].to_string().into_bytes(),
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.as_str().unwrap().as_bytes().to_vec())))
                    .collect(),
            }
        })
        .collect()
}

/// The expected violations: "CONTROL subject" and its id.
fn expected() -> Vec<(String, String)> {
    let text = std::fs::read_to_string("tests/scenarios/native.expected").unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (control, subject) = l.split_once(' ').unwrap();
            (l.to_string(), vigil::violation::violation_id(control, subject))
        })
        .collect()
}

#[test]
fn a_scenario_in_native_formats_yields_exactly_its_violations() {
    let dir = tempfile::tempdir().unwrap();
    let broker = kafka_with_topics(3);
    let mut records = records();
    let truncated = records.iter().find(|r| r.topic == "deploy").unwrap().payload[..100].to_vec();
    records.push(Record { topic: "deploy".into(), key: "payments".into(), payload: truncated, headers: Vec::new() });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(produce_all(&broker.bootstrap(), &records)).unwrap();

    let port = free_port();
    let config = dir.path().join("vigil.toml");
    let native = std::fs::read_to_string("tests/payloads/native.toml").unwrap();
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"scenario\"\n\n\
             [time]\ntick = \"200ms\"\nidle_timeout = \"1s\"\n\n[metrics]\naddr = \"127.0.0.1:{port}\"\n\n\
             [identities]\nalice = [\"alice-gh\", \"alice@acme.example\"]\nbob = [\"bob-gh\"]\n\
             carol = [\"carol-gh\", \"carol@acme.example\"]\nmaria = [\"maria-gh\", \"maria@acme.example\"]\n\n{native}",
            broker.bootstrap()
        ),
    )
    .unwrap();
    let log = dir.path().join("vigil.log");
    let _vigil = start_vigil(&config, &log);

    let (labels, expected): (Vec<String>, Vec<String>) = expected().into_iter().unzip();
    let found = wait_for_output(&broker.bootstrap(), &expected, Duration::from_secs(3), Duration::from_secs(120));
    let outcome = compare(&expected, &found);
    let missing: Vec<&String> =
        labels.iter().zip(&expected).filter(|(_, id)| !found.contains_key(*id)).map(|(l, _)| l).collect();
    assert_eq!(
        outcome,
        support::Outcome::default(),
        "missing: {missing:?}\nunexpected: {:?}\nlog:\n{}",
        support::describe_unexpected(&expected, &found),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let metrics = scrape(port);
    let sum = |name: &str| vigil::metrics::sample_sum(&metrics, name);
    assert_eq!(sum("vigil_events_consumed_total"), records.len() as f64);
    assert_eq!(sum("vigil_events_ignored_total"), 4.0, "incident, push, unlisted group, the pipeline's own patch");
    assert_eq!(sum("vigil_dead_letters_total"), 1.0, "the truncated payload");

    // Evidence for the three finished production deploys (Argo CD, the
    // shadow deploy, Spinnaker), archived by `vigil archive`, verified; a
    // second run appends nothing.
    let archive = dir.path().join("archive");
    let run_archive = || {
        let out = std::process::Command::new(support::VIGIL)
            .args(["archive", "--config"])
            .arg(&config)
            .arg("--archive")
            .arg(&archive)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(run_archive().contains("archive: 3 evidence records and 9 violations"), "evidence not archived");
    assert!(run_archive().contains("archive: 0 evidence records and 0 violations"));
    let verify =
        std::process::Command::new(support::VIGIL).arg("verify").arg("--archive").arg(&archive).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let rows = std::process::Command::new(support::VIGIL)
        .args(["query", "--archive"])
        .arg(&archive)
        .arg("SELECT deploy_id, compliant FROM evidence WHERE deploy_id = 'spin-4411'")
        .output()
        .unwrap();
    let rows = String::from_utf8_lossy(&rows.stdout);
    assert!(rows.contains("spin-4411") && rows.contains("false"), "{rows}");
}
