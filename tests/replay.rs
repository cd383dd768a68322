//! `vigil replay` as a user runs it: a generated period exported as JSON
//! lines, an Avro container file and Parquet, with one broken line, replayed
//! to exactly the ground truth; the broken line is named by file and line.
//! And `vigil bench` in miniature.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

mod support;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use serde_json::{Map, Value};
use support::VIGIL;
use vigil::decode::{Decoder, Format, RawMessage, SchemaResolver, TimeBounds};
use vigil::generate::{to_avro, Truth};
use vigil::schema::{Catalog, FieldKind, Topic};

fn lines(path: &Path) -> Vec<Map<String, Value>> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// ci.jsonl → ci.avro: an object container file in the canonical schema.
fn to_container(dir: &Path, topic: Topic) {
    let catalog = Catalog::builtin().unwrap();
    let schema = catalog.event(topic);
    let jsonl = dir.join(format!("{topic}.jsonl"));
    let mut writer = apache_avro::Writer::new(&schema.avro, Vec::new());
    for mut event in lines(&jsonl) {
        // The export writes times as RFC 3339; the encoder takes epoch ms.
        for field in schema.fields.iter().filter(|f| f.kind == FieldKind::Timestamp) {
            if let Some(Value::String(t)) = event.get(&field.name) {
                let ms = chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp_millis();
                event.insert(field.name.clone(), ms.into());
            }
        }
        let framed = to_avro(schema, &event).unwrap();
        let value = apache_avro::from_avro_datum(&schema.avro, &mut &framed[5..], None).unwrap();
        writer.append(value).unwrap();
    }
    std::fs::write(dir.join(format!("{topic}.avro")), writer.into_inner().unwrap()).unwrap();
    std::fs::remove_file(jsonl).unwrap();
}

/// deploy.jsonl → deploy.parquet: the canonical columns, timestamps typed.
fn to_parquet(dir: &Path, topic: Topic) {
    let catalog = Catalog::builtin().unwrap();
    let schema = catalog.event(topic);
    let resolver = Arc::new(SchemaResolver::new(None, None).unwrap());
    let decoder = Decoder::new(schema.clone(), resolver, Format::Json, TimeBounds::default());
    let jsonl = dir.join(format!("{topic}.jsonl"));
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let raw = text.lines().enumerate().map(|(i, l)| RawMessage::new(Some(l.as_bytes()), 0, i as i64));
    let batch = decoder.decode(raw, vigil::pipeline::wall_ms()).batch.unwrap();
    // Without the Kafka coordinates: an export has none.
    let n = batch.num_columns();
    let batch: RecordBatch = batch.project(&(0..n - 2).collect::<Vec<_>>()).unwrap();
    let file = std::fs::File::create(dir.join(format!("{topic}.parquet"))).unwrap();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    std::fs::remove_file(jsonl).unwrap();
}

#[test]
fn a_period_exported_in_three_formats_replays_to_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("q1");
    let config = dir.path().join("vigil.toml");
    let status = Command::new(VIGIL)
        .args(["generate", "--events", "6000", "--seed", "8", "--out"])
        .arg(&data)
        .arg("--identities")
        .arg(&config)
        .status()
        .unwrap();
    assert!(status.success());
    to_container(&data, Topic::Ci);
    to_parquet(&data, Topic::Deploy);
    let change = data.join("change.jsonl");
    let good_lines = std::fs::read_to_string(&change).unwrap().lines().count();
    let mut text = std::fs::read_to_string(&change).unwrap();
    text.push_str("{\"event_id\": \"cut-off\", \"event_time\": 17\n");
    std::fs::write(&change, text).unwrap();

    let truth: Truth = serde_json::from_str(&std::fs::read_to_string(data.join("truth.json")).unwrap()).unwrap();
    std::fs::remove_file(data.join("truth.json")).unwrap();
    let out = dir.path().join("violations.jsonl");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let run = Command::new(VIGIL)
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .args(["--until", &now])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let bad_line = format!("change.jsonl:{}: invalid JSON", good_lines + 1);
    assert!(stderr.contains(&bad_line), "the broken line is named ({bad_line}): {stderr}");
    assert!(stderr.contains("1 rejected"), "{stderr}");

    let found: std::collections::BTreeSet<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_string())
        .collect();
    let expected: std::collections::BTreeSet<String> = truth.violations.into_iter().map(|v| v.id).collect();
    assert!(!expected.is_empty());
    assert_eq!(found, expected, "missing: {:?}", expected.difference(&found).collect::<Vec<_>>());
}

/// What the README's replay example does: `vigil generate --out DIR` writes
/// the organisation's identity map beside its events and `vigil replay DIR`
/// finds it, saying so, and decides exactly the truth; without it, replay
/// says people are compared by name, and misses the violations that need
/// one person's names in two tools tied together.
#[test]
fn replay_finds_the_identity_map_generate_wrote_and_says_when_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let status =
        Command::new(VIGIL).args(["generate", "--events", "6000", "--seed", "3", "--out"]).arg(&data).status().unwrap();
    assert!(status.success());
    let truth: Truth = serde_json::from_str(&std::fs::read_to_string(data.join("truth.json")).unwrap()).unwrap();
    let expected: std::collections::BTreeSet<String> = truth.violations.into_iter().map(|v| v.id).collect();
    let replay = || {
        let out = dir.path().join("violations.jsonl");
        let run = Command::new(VIGIL)
            .arg("replay")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args(["--until", "2030-01-01T00:00:00Z"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(run.status.success(), "{stderr}");
        let found: std::collections::BTreeSet<String> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_string())
            .collect();
        (found, stderr)
    };
    let (found, stderr) = replay();
    assert!(stderr.contains("identities.toml"), "{stderr}");
    assert_eq!(found, expected);
    std::fs::remove_file(data.join("identities.toml")).unwrap();
    let (found, stderr) = replay();
    assert!(stderr.contains("no identity map"), "{stderr}");
    assert!(found.len() < expected.len(), "without the map, names that differ between tools are different people");
}

/// `vigil bench` in miniature (in-process only): every figure is written,
/// and the core run's violations equal the ground truth.
#[test]
fn bench_writes_every_figure_and_its_core_run_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("b.json");
    let run = Command::new(VIGIL)
        .args(["bench", "--no-broker", "--events", "3000", "--retained", "20000", "--due", "20", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let b: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for key in [
        "core_events_per_s",
        "e2e_ratio_vs_bare_consumer",
        "eval_cost_ratio_10m_vs_1m",
        "bytes_per_retained_event",
        "p99_decision_latency_past_grace_s",
        "all_targets_met",
        "targets",
    ] {
        assert!(b.get(key).is_some(), "{key} missing: {b}");
    }
    assert!(b["core_events_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(b["raw"]["core"]["exact"], true, "{b}");
    assert_eq!(b["raw"]["eval_large"]["due_deploys"], 20);
    assert!(b["raw"]["eval_large"]["retained_events"].as_u64().unwrap() >= 20_000);
    // Without a broker the broker figures are absent, not invented.
    assert!(b["e2e_ratio_vs_bare_consumer"].is_null());
}
