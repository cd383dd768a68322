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
