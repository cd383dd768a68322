//! Decoder behaviour on good and bad input: every bad payload is rejected
//! with a reason that names the problem, and the good ones around it survive.

use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray};
use vigil::decode::{confluent_frame, DecodeError, Decoder, Format, RawMessage, SchemaResolver, TimeBounds};
use vigil::generate::{generate, to_avro, to_json, GenConfig};
use vigil::schema::{Catalog, Topic};

const NOW: i64 = 1_790_000_000_000;

fn decoder(topic: Topic, format: Format) -> Decoder {
    let catalog = Catalog::builtin().unwrap();
    let resolver = Arc::new(SchemaResolver::new(None, None).unwrap());
    Decoder::new(catalog.event(topic).clone(), resolver, format, TimeBounds::default())
}

fn one(decoder: &Decoder, payload: &[u8]) -> Result<usize, DecodeError> {
    let decoded = decoder.decode([RawMessage::new(Some(payload), 2, 41)], NOW);
    match decoded.rejects.into_iter().next() {
        Some(r) => {
            assert_eq!((r.partition, r.offset), (2, 41), "a reject keeps its coordinates");
            Err(r.error)
        }
        None => Ok(decoded.batch.map_or(0, |b| b.num_rows())),
    }
}

fn sample(topic: Topic) -> serde_json::Map<String, serde_json::Value> {
    let (events, _) = generate(&GenConfig::new(2_000, 3, NOW));
    events.into_iter().find(|e| e.topic == topic).unwrap().fields
}

fn deploy_json(overrides: &str) -> Vec<u8> {
    let mut base: serde_json::Value = serde_json::json!({
        "event_id": "e1", "event_time": "2026-09-20T10:00:00Z", "deploy_id": "d1", "service": "payments",
        "environment": "production", "commit_sha": "abc", "actor": "alice", "automated": false, "status": "succeeded"
    });
    let patch: serde_json::Value = serde_json::from_str(overrides).unwrap();
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    serde_json::to_vec(&base).unwrap()
}

#[test]
fn every_generated_event_round_trips_through_avro_and_json() {
    let catalog = Catalog::builtin().unwrap();
    let (events, _) = generate(&GenConfig::new(3_000, 9, NOW));
    for topic in Topic::ALL {
        let of_topic: Vec<_> = events.iter().filter(|e| e.topic == topic).collect();
        for format in [Format::Avro, Format::Json, Format::Auto] {
            let payloads: Vec<Vec<u8>> = of_topic
                .iter()
                .map(|e| match format {
                    Format::Json => to_json(catalog.event(topic), &e.fields),
                    _ => to_avro(catalog.event(topic), &e.fields).unwrap(),
                })
                .collect();
            let raw = payloads.iter().enumerate().map(|(i, p)| RawMessage::new(Some(p), 0, i as i64));
            let decoded = decoder(topic, format).decode(raw, NOW);
            assert!(decoded.rejects.is_empty(), "{topic} {format:?}: {:?}", decoded.rejects.first());
            let batch = decoded.batch.unwrap();
            assert_eq!(batch.num_rows(), of_topic.len());
            let ids = batch.column_by_name("event_id").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
            assert_eq!(ids.value(0), of_topic[0].fields["event_id"].as_str().unwrap());
        }
    }
}

#[test]
fn truncated_avro_is_rejected_as_avro() {
    let catalog = Catalog::builtin().unwrap();
    let good = to_avro(catalog.event(Topic::Ci), &sample(Topic::Ci)).unwrap();
    let err = one(&decoder(Topic::Ci, Format::Avro), &good[..good.len() / 2]).unwrap_err();
    assert_eq!(err.reason(), "avro");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn avro_with_trailing_bytes_is_rejected() {
    let catalog = Catalog::builtin().unwrap();
    let mut good = to_avro(catalog.event(Topic::Change), &sample(Topic::Change)).unwrap();
    good.extend_from_slice(b"junk");
    let err = one(&decoder(Topic::Change, Format::Avro), &good).unwrap_err();
    assert_eq!(err, DecodeError::TrailingBytes(4));
}

#[test]
fn unknown_schema_id_is_rejected_naming_the_id() {
    let err = one(&decoder(Topic::Deploy, Format::Avro), &confluent_frame(4242, b"\x02ab")).unwrap_err();
    assert_eq!(err, DecodeError::UnknownSchemaId(4242));
    assert!(err.to_string().contains("4242") && err.to_string().contains("register"), "{err}");
}

#[test]
fn short_confluent_header_is_rejected() {
    let err = one(&decoder(Topic::Deploy, Format::Avro), &[0, 0, 1]).unwrap_err();
    assert_eq!(err, DecodeError::ShortHeader(3));
}

#[test]
fn wrong_json_type_names_field_expected_and_found() {
    let err = one(&decoder(Topic::Deploy, Format::Json), &deploy_json(r#"{"automated": "yes"}"#)).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.reason(), "wrong_type");
    assert!(text.contains("`automated`") && text.contains("true or false") && text.contains("\"yes\""), "{text}");
}

#[test]
fn missing_required_field_is_named() {
    let err = one(&decoder(Topic::Deploy, Format::Json), &deploy_json(r#"{"commit_sha": null}"#)).unwrap_err();
    assert_eq!(err, DecodeError::Missing { field: "commit_sha".into() });
}

#[test]
fn unknown_enum_symbol_lists_the_allowed_ones() {
    let err = one(&decoder(Topic::Deploy, Format::Json), &deploy_json(r#"{"status": "exploded"}"#)).unwrap_err();
    assert_eq!(err.reason(), "unknown_symbol");
    assert!(err.to_string().contains("rolled_back"), "{err}");
}

#[test]
fn event_time_decades_off_is_rejected() {
    for t in [r#"{"event_time": "1986-01-01T00:00:00Z"}"#, r#"{"event_time": "2080-01-01T00:00:00Z"}"#] {
        let err = one(&decoder(Topic::Deploy, Format::Json), &deploy_json(t)).unwrap_err();
        assert_eq!(err.reason(), "event_time", "{t}");
        assert!(err.to_string().contains("milliseconds"), "{err}");
    }
}

#[test]
fn epoch_millis_and_rfc3339_agree() {
    let d = decoder(Topic::Deploy, Format::Json);
    assert_eq!(one(&d, &deploy_json(r#"{"event_time": 1789900000000}"#)), Ok(1));
    assert_eq!(one(&d, &deploy_json(r#"{"event_time": "2026-09-20T10:00:00+02:00"}"#)), Ok(1));
}

#[test]
fn not_json_and_not_avro_is_rejected_in_auto_mode() {
    let err = one(&decoder(Topic::Ci, Format::Auto), b"hello").unwrap_err();
    assert_eq!(err, DecodeError::UnknownEncoding(b'h'));
    let err = one(&decoder(Topic::Ci, Format::Auto), b"{not json").unwrap_err();
    assert_eq!(err.reason(), "json");
    let err = one(&decoder(Topic::Ci, Format::Json), b"[1,2]").unwrap_err();
    assert_eq!(err, DecodeError::NotAnObject("an array"));
}

#[test]
fn empty_payload_is_rejected() {
    let decoded = decoder(Topic::Ci, Format::Auto).decode([RawMessage::new(None, 0, 0)], NOW);
    assert_eq!(decoded.rejects[0].error, DecodeError::Empty);
}

#[test]
fn bad_records_do_not_take_good_neighbours_with_them() {
    let d = decoder(Topic::Deploy, Format::Auto);
    let good = deploy_json("{}");
    let bad = deploy_json(r#"{"status": 3}"#);
    let msgs = [&good, &bad, &good].map(|p| p.as_slice());
    let raw = msgs.iter().enumerate().map(|(i, p)| RawMessage::new(Some(p), 0, i as i64));
    let decoded = d.decode(raw, NOW);
    assert_eq!(decoded.batch.unwrap().num_rows(), 2);
    assert_eq!(decoded.rejects.len(), 1);
    assert_eq!(decoded.rejects[0].offset, 1);
}

#[test]
fn every_truncation_of_an_avro_datum_is_rejected() {
    let catalog = Catalog::builtin().unwrap();
    for topic in Topic::ALL {
        let good = to_avro(catalog.event(topic), &sample(topic)).unwrap();
        let d = decoder(topic, Format::Avro);
        for cut in 0..good.len() {
            assert!(
                one(&d, &good[..cut]).is_err(),
                "{topic}: a datum cut at {cut} of {} bytes was accepted",
                good.len()
            );
        }
        assert_eq!(one(&d, &good), Ok(1));
    }
}

/// A one-route schema registry: `GET /schemas/ids/77` answers a writer schema
/// that has one field more than the canonical deploy schema.
fn fake_registry(hits: Arc<std::sync::atomic::AtomicUsize>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut writer: serde_json::Value = serde_json::from_str(include_str!("../schemas/deploy.avsc")).unwrap();
    writer["fields"].as_array_mut().unwrap().push(serde_json::json!({"name": "region", "type": "string"}));
    let body = serde_json::json!({ "schema": writer.to_string() }).to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            reader.read_line(&mut line).unwrap();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                    break;
                }
            }
            hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (status, body) = if line.starts_with("GET /schemas/ids/77 ") {
                ("200 OK", body.as_str())
            } else {
                ("404 Not Found", "{}")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn writer_schema_from_a_registry_is_resolved_to_the_canonical_one() {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let url = fake_registry(hits.clone());
    let catalog = Catalog::builtin().unwrap();
    let resolver = Arc::new(SchemaResolver::new(None, Some(url)).unwrap());
    let d = Decoder::new(catalog.event(Topic::Deploy).clone(), resolver, Format::Avro, TimeBounds::default());
    // The canonical datum followed by the writer's extra string field.
    let canonical = to_avro(catalog.event(Topic::Deploy), &sample(Topic::Deploy)).unwrap();
    let mut datum = canonical[5..].to_vec();
    datum.extend_from_slice(&[8, b'e', b'u', b'-', b'1']);
    let framed = confluent_frame(77, &datum);
    assert_eq!(one(&d, &framed), Ok(1));
    assert_eq!(one(&d, &framed), Ok(1));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1, "the schema is fetched once");
    assert_eq!(one(&d, &confluent_frame(78, &datum)), Err(DecodeError::UnknownSchemaId(78)));
}

/// A call large enough to be split over two threads decodes exactly as
/// decoding its messages one at a time does: the same rows in the same order,
/// the same rejects at the same coordinates, the same newest times.
#[test]
fn a_split_call_decodes_as_one_message_at_a_time() {
    let catalog = Catalog::builtin().unwrap();
    let (events, _) = generate(&GenConfig::new(12_000, 5, NOW));
    let mut payloads: Vec<Vec<u8>> = events
        .iter()
        .filter(|e| e.topic == Topic::Ci)
        .map(|e| to_avro(catalog.event(Topic::Ci), &e.fields).unwrap())
        .collect();
    assert!(payloads.len() >= 2 * vigil::decode::SPLIT_AT, "{} ci events", payloads.len());
    // Bad payloads in both halves.
    let n = payloads.len();
    for at in [3, n / 2 - 1, n / 2 + 7, n - 2] {
        let half = payloads[at].len() / 2;
        payloads[at].truncate(half);
    }
    let raw: Vec<RawMessage> =
        payloads.iter().enumerate().map(|(i, p)| RawMessage::new(Some(p), (i % 3) as i32, i as i64)).collect();
    let d = decoder(Topic::Ci, Format::Avro);
    let whole = d.decode(raw.iter().copied(), NOW);
    let singles: Vec<_> = raw.iter().map(|m| d.decode([*m], NOW)).collect();
    let rows: Vec<_> = singles.iter().filter_map(|s| s.batch.clone()).collect();
    let expected = datafusion::arrow::compute::concat_batches(&rows[0].schema(), &rows).unwrap();
    assert_eq!(whole.batch.unwrap(), expected);
    let coordinates = |r: &vigil::decode::Reject| (r.partition, r.offset);
    let rejects: Vec<_> = singles.iter().flat_map(|s| s.rejects.iter().map(coordinates)).collect();
    assert_eq!(whole.rejects.iter().map(coordinates).collect::<Vec<_>>(), rejects);
    assert_eq!(rejects.len(), 4);
    let mut max_time = std::collections::BTreeMap::new();
    for (p, t) in singles.iter().flat_map(|s| s.max_time.iter().copied()) {
        let m = max_time.entry(p).or_insert(t);
        *m = (*m).max(t);
    }
    assert_eq!(whole.max_time.into_iter().collect::<std::collections::BTreeMap<_, _>>(), max_time);
}
