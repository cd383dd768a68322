//! End to end over the Kafka protocol: a generated stream goes through an
//! embedded broker into the processor, and what comes out on the violations
//! and dead-letter topics must equal the ground truth exactly.

use std::collections::BTreeSet;
use std::time::Duration;

use vigil::demo::{run, DemoOptions};
use vigil::generate::Encoding;

fn options(events: usize, seed: u64, encoding: Encoding, bad_records: usize) -> DemoOptions {
    DemoOptions {
        events,
        seed,
        bad_records,
        encoding,
        partitions: 3,
        print: false,
        metrics_addr: None,
        alertmanager_url: None,
        archive: None,
        timeout: Duration::from_secs(300),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_stream_of_20k_events_yields_exactly_the_injected_violations() {
    let summary = run(options(20_000, 7, Encoding::Avro, 20)).await.unwrap();
    assert_eq!(summary.events, 20_000);
    assert_eq!((summary.missing, summary.unexpected, summary.duplicates), (0, 0, 0), "{summary:?}");
    let catalogue = vigil::controls::builtin_sources();
    assert_eq!(catalogue.len(), 13);
    for source in catalogue {
        let control = vigil::controls::parse_meta(&source.sql).unwrap().id;
        let count = &summary.per_control[control.as_str()];
        assert!(count.expected > 0, "{control} was never injected");
        assert_eq!(count.expected, count.found, "{control}");
    }
    // Every bad record reached the dead-letter topic with its reason and
    // source coordinates, and the good records around them were processed.
    assert_eq!(summary.dead_letters, 20);
    let mut reasons = BTreeSet::new();
    for record in &summary.dead_letter_records {
        let header = |k: &str| record.headers.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let reason = header("vigil.reason").expect("reason header");
        let topic = header("vigil.source.topic").expect("source topic header");
        let partition = header("vigil.source.partition").expect("source partition header");
        let offset = header("vigil.source.offset").expect("source offset header");
        let error = header("vigil.error").expect("error header");
        assert!(error.starts_with(&format!("{topic}/{partition}/{offset}: ")), "{error}");
        assert!(record.payload.is_some() || reason == "empty");
        reasons.insert(reason);
    }
    // Truncated Avro, unknown schema, wrong JSON types (NaN for a time too),
    // missing fields, event times decades off or negative, oversize payloads,
    // invalid UTF-8, unknown enum symbols.
    let expected: BTreeSet<String> =
        ["avro", "schema", "wrong_type", "missing_field", "event_time", "oversize", "json", "unknown_symbol"]
            .map(String::from)
            .into();
    assert_eq!(reasons, expected);

    // The metrics tell the same story.
    let m = &summary.metrics_text;
    assert_eq!(vigil::metrics::sample_sum(m, "vigil_events_consumed_total"), 20_020.0);
    assert_eq!(vigil::metrics::sample_sum(m, "vigil_events_rejected_total"), 20.0);
    assert_eq!(vigil::metrics::sample_sum(m, "vigil_dead_letters_total"), 20.0);
    assert_eq!(vigil::metrics::sample_sum(m, "vigil_violations_total"), summary.found as f64);
    assert!(m.contains("vigil_violations_total{control=\"SOD-02\",severity=\"critical\"}"), "{m}");
    assert!(vigil::metrics::sample_sum(m, "vigil_evaluation_duration_seconds_count") > 0.0);
    assert!(vigil::metrics::sample_sum(m, "vigil_watermark_seconds") > 0.0);
    assert_eq!(vigil::metrics::sample_sum(m, "vigil_pending_triggers"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_stream_gives_the_same_decisions_as_avro() {
    let summary = run(options(6_000, 21, Encoding::Json, 0)).await.unwrap();
    assert!(summary.expected > 0);
    assert_eq!((summary.missing, summary.unexpected, summary.duplicates), (0, 0, 0), "{summary:?}");
}

/// A late approval arriving after CM-01 decided its deploy: the violation is
/// published, then retracted by an amendment on the same topic, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_approval_retracts_a_published_violation() {
    use vigil::config::{Config, RawConfig};
    use vigil::controls::builtin_sources;
    use vigil::embedded::{produce_all, EmbeddedBroker, Record};
    use vigil::pipeline::{wall_ms, Pipeline};
    use vigil::violation::violation_id;

    let broker = EmbeddedBroker::start().unwrap();
    let bootstrap = broker.bootstrap_servers();
    for topic in ["change", "ci", "access", "deploy", "vigil-violations", "vigil-evidence"] {
        broker.create_topic(topic, 1).unwrap();
    }
    broker.create_topic("vigil-dead-letter", 1).unwrap();
    let t = (wall_ms() / 1000) * 1000 - 2 * 86_400_000;
    let record = |topic: &str, json: String| Record {
        topic: topic.into(),
        key: "payments".into(),
        payload: json.into_bytes(),
        headers: Vec::new(),
    };
    let deploy = format!(
        r#"{{"event_id":"dep-ev","event_time":{t},"deploy_id":"dep-1","service":"payments","environment":"production",
            "commit_sha":"c0ffee","actor":"svc-deploybot","automated":true,"change_id":"CHG-1","status":"succeeded"}}"#
    );
    produce_all(&bootstrap, &[record("deploy", deploy)]).await.unwrap();

    let mut raw = RawConfig::default();
    raw.kafka.bootstrap_servers = bootstrap.clone();
    raw.time.tick = Some("200ms".into());
    raw.time.idle_timeout = Some("1s".into());
    let config = Config::validate(raw).unwrap();
    let metrics = vigil::metrics::Metrics::new();
    let pipeline = Pipeline::new(config, &builtin_sources(), metrics.clone()).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(pipeline.run(stop_rx));
    let id = violation_id("CM-01", "dep-1");
    let first = records_of(&bootstrap, &id, 1).await;
    assert_eq!(first.len(), 1, "CM-01 did not decide dep-1");
    assert_eq!(first[0].status, "open");

    let approval = format!(
        r#"{{"event_id":"chg-ev","event_time":{},"change_id":"CHG-1","service":"payments","action":"approved",
            "actor":"maria@acme.example","requester":"alice@acme.example"}}"#,
        t - 300_000
    );
    produce_all(&bootstrap, &[record("change", approval)]).await.unwrap();
    let both = records_of(&bootstrap, &id, 2).await;
    let _ = stop_tx.send(true);
    running.await.unwrap().unwrap();
    assert_eq!(both.len(), 2, "no amendment: {both:?}");
    assert_eq!(both[1].status, "retracted");
    assert!(both[1].evidence.iter().any(|e| e.starts_with("chg-ev@change/")), "{:?}", both[1].evidence);
    let text = metrics.render();
    assert_eq!(
        vigil::metrics::sample_sum(&text, "vigil_amendments_total"),
        1.0,
        "{}",
        text.lines().filter(|l| l.contains("amend")).collect::<Vec<_>>().join("\n")
    );
}

/// The records of violation `id` on the violations topic, once there are
/// `n` of them (or after a minute).
async fn records_of(bootstrap: &str, id: &str, n: usize) -> Vec<vigil::violation::Violation> {
    let catalog = vigil::schema::Catalog::builtin().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let b = bootstrap.to_string();
        let records = tokio::task::spawn_blocking(move || {
            vigil::embedded::read_all(&b, "vigil-violations", Duration::from_secs(30))
        })
        .await
        .unwrap()
        .unwrap();
        let found: Vec<_> = records
            .iter()
            .map(|r| {
                vigil::violation::Violation::from_confluent_avro(&catalog.violation, r.payload.as_deref().unwrap())
                    .unwrap()
            })
            .filter(|v| v.id == id)
            .collect();
        if found.len() >= n || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `vigil bench --soak` in miniature against a real Kafka it starts: the
/// samples of the `vigil run` it starts reach the CSV and the chart, and
/// after a kill -9 and a restart that replays from the committed offsets
/// the violations topic is exact against the generator's truth (the
/// hour-long run is in BENCHMARKS.md).
#[test]
fn a_short_soak_samples_memory_and_ends_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (json, csv) = (dir.path().join("soak.json"), dir.path().join("soak.csv"));
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["bench", "--soak", "25s", "--rate", "2000", "--json"])
        .arg(&json)
        .arg("--soak-csv")
        .arg(&csv)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        stdout.contains("soak: broker=kafka-4") && stdout.contains("missing=0 unexpected=0 duplicates=0"),
        "{stdout}"
    );
    let b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let soak = &b["raw"]["soak"];
    assert_eq!(soak["exact"], true, "{b}");
    assert!(soak["expected"].as_u64().unwrap() > 0, "a soak with nothing to find proves nothing: {b}");
    assert_eq!(soak["events"], 60_000, "three generated days of 20,000");
    let lines: Vec<String> = std::fs::read_to_string(&csv).unwrap().lines().map(String::from).collect();
    assert_eq!(lines[0], "seconds,rss_bytes,heap_bytes,produced,consumed,violations,held_ids");
    assert!(soak["restart"]["replayed"].as_u64().unwrap() > 0, "the restart replayed nothing: {b}");
    assert!(lines.len() >= 4, "{lines:?}");
    let rss: u64 = lines[1].split(',').nth(1).unwrap().parse().unwrap();
    assert!(rss > 10 << 20, "{}", lines[1]);
    let chart = std::fs::read_to_string(csv.with_extension("svg")).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("<polyline"), "{chart}");
}
