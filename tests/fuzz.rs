//! Every decoder against a million generated inputs each (VIGIL_FUZZ_INPUTS
//! changes the count): valid events of every topic, mangled — bytes flipped,
//! cut, inserted, spliced, replaced wholesale; JSON values swapped for other
//! types, huge, negative or NaN numbers, unknown symbols, invalid UTF-8. No
//! input may panic, and every input must come out either as a row or as a
//! reject with a reason: nothing is dropped.

use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use vigil::decode::{Decoder, Format, RawMessage, SchemaResolver, TimeBounds};
use vigil::generate::{generate, to_avro, to_json, GenConfig};
use vigil::schema::{Catalog, Topic};

const REASONS: &[&str] = &[
    "empty",
    "oversize",
    "encoding",
    "schema",
    "avro",
    "json",
    "missing_field",
    "wrong_type",
    "unknown_symbol",
    "event_time",
    "unmappable",
];

fn mangle_json(rng: &mut ChaCha8Rng, valid: &[u8]) -> Vec<u8> {
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(valid) else { return valid.to_vec() };
    let keys: Vec<String> = object.keys().cloned().collect();
    let key = keys[rng.random_range(0..keys.len())].clone();
    let replacement = match rng.random_range(0..10) {
        0 => json!(null),
        1 => json!(rng.random::<i64>()),
        2 => json!(-rng.random_range(0..i64::MAX)),
        3 => json!(rng.random::<f64>() * 1e300),
        4 => json!("NaN"),
        5 => json!("exploded"),
        6 => json!([1, 2, 3]),
        7 => json!({"nested": true}),
        8 => json!("x".repeat(rng.random_range(0..5000))),
        _ => {
            object.remove(&key);
            return serde_json::to_vec(&object).unwrap_or_default();
        }
    };
    object.insert(key, replacement);
    let mut out = serde_json::to_vec(&object).unwrap_or_default();
    if rng.random_bool(0.1) {
        let at = rng.random_range(0..out.len());
        out.insert(at, 0xff); // invalid UTF-8
    }
    out
}

fn mangle(rng: &mut ChaCha8Rng, valid: &[u8], other: &[u8], json: bool) -> Vec<u8> {
    let mut out = valid.to_vec();
    match rng.random_range(0..8) {
        0 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
        1 => {
            for _ in 0..rng.random_range(1..5) {
                if !out.is_empty() {
                    let at = rng.random_range(0..out.len());
                    out[at] ^= 1 << rng.random_range(0..8);
                }
            }
            out
        }
        2 => {
            out.truncate(rng.random_range(0..=out.len()));
            out
        }
        3 => {
            let at = rng.random_range(0..=out.len());
            let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
            out.splice(at..at, extra);
            out
        }
        4 => {
            let cut = rng.random_range(0..=out.len());
            let from = rng.random_range(0..=other.len());
            out.truncate(cut);
            out.extend_from_slice(&other[from..]);
            out
        }
        5 if json => mangle_json(rng, valid),
        6 => {
            let (a, b) = (rng.random_range(0..=out.len()), rng.random_range(0..=out.len()));
            let (a, b) = (a.min(b), a.max(b));
            let section = out[a..b].to_vec();
            out.splice(b..b, section);
            out
        }
        _ => out,
    }
}

#[test]
fn every_decoder_survives_a_million_mangled_inputs() {
    let per_decoder: usize = std::env::var("VIGIL_FUZZ_INPUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let catalog = Catalog::builtin().unwrap();
    let resolver = Arc::new(SchemaResolver::new(None, None).unwrap());
    let now = 1_790_000_000_000;
    let (events, _) = generate(&GenConfig::new(2_000, 3, now));
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for format in [Format::Json, Format::Avro, Format::AvroPlain] {
        let started = Instant::now();
        let (mut rows, mut rejected) = (0usize, 0usize);
        for topic in Topic::ALL {
            let schema = catalog.event(topic);
            let valid: Vec<Vec<u8>> = events
                .iter()
                .filter(|e| e.topic == topic)
                .map(|e| match format {
                    Format::Json => to_json(schema, &e.fields),
                    Format::Avro => to_avro(schema, &e.fields).unwrap(),
                    _ => to_avro(schema, &e.fields).unwrap()[5..].to_vec(),
                })
                .collect();
            let decoder = Decoder::new(schema.clone(), resolver.clone(), format, TimeBounds::default());
            let mut left = per_decoder / 4;
            while left > 0 {
                let n = left.min(1024);
                left -= n;
                let inputs: Vec<Vec<u8>> = (0..n)
                    .map(|_| {
                        let a = &valid[rng.random_range(0..valid.len())];
                        let b = &valid[rng.random_range(0..valid.len())];
                        mangle(&mut rng, a, b, format == Format::Json)
                    })
                    .collect();
                let decoded = decoder.decode(
                    inputs.iter().enumerate().map(|(i, p)| RawMessage::new(Some(p.as_slice()), 0, i as i64)),
                    now,
                );
                let got = decoded.batch.as_ref().map_or(0, |b| b.num_rows());
                assert_eq!(
                    got + decoded.rejects.len(),
                    n,
                    "{format:?} {topic}: an input was neither a row nor a reject"
                );
                for r in &decoded.rejects {
                    assert!(REASONS.contains(&r.error.reason()), "unknown reason {}", r.error.reason());
                }
                rows += got;
                rejected += decoded.rejects.len();
            }
        }
        eprintln!(
            "fuzz {format:?}: {} inputs ({rows} rows, {rejected} rejects) in {:.1}s",
            rows + rejected,
            started.elapsed().as_secs_f64()
        );
        assert!(rows > 0 && rejected > 0, "{format:?}: the inputs should mix good and bad");
    }
}

/// The tool-native mappers (through `auto`, which also picks the tool) on
/// mangled copies of every test payload: each input is a row, an ignored
/// payload or a reject with a known reason — never a panic.
#[test]
fn native_mappers_survive_mangled_payloads() {
    let inputs_total: usize =
        std::env::var("VIGIL_FUZZ_INPUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000) / 5;
    let catalog = Catalog::builtin().unwrap();
    let resolver = Arc::new(SchemaResolver::new(None, None).unwrap());
    let config = vigil::config::Config::load(std::path::Path::new("tests/payloads/native.toml")).unwrap();
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir("tests/payloads")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.sort();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (mut rows, mut ignored, mut rejected) = (0usize, 0usize, 0usize);
    for topic in Topic::ALL {
        let decoder = Decoder::new(catalog.event(topic).clone(), resolver.clone(), Format::Auto, TimeBounds::default())
            .with_native(config.native.clone());
        let mut left = inputs_total / 4;
        while left > 0 {
            let n = left.min(1024);
            left -= n;
            let inputs: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let a = &seeds[rng.random_range(0..seeds.len())];
                    let b = &seeds[rng.random_range(0..seeds.len())];
                    if rng.random_bool(0.5) {
                        mangle(&mut rng, a, b, true)
                    } else {
                        let mut v: Value = serde_json::from_slice(a).unwrap();
                        for _ in 0..rng.random_range(1..4) {
                            mutate(&mut rng, &mut v);
                        }
                        serde_json::to_vec(&v).unwrap()
                    }
                })
                .collect();
            let decoded = decoder.decode(
                inputs.iter().enumerate().map(|(i, p)| RawMessage::new(Some(p.as_slice()), 0, i as i64)),
                1_796_000_000_000,
            );
            let got = decoded.batch.as_ref().map_or(0, |b| b.num_rows());
            // One payload may map to several rows; every one has its offset.
            let offsets: std::collections::BTreeSet<i64> = decoded
                .batch
                .as_ref()
                .map(|b| {
                    let o = b.column_by_name(vigil::schema::OFFSET_COLUMN).unwrap();
                    let o = o.as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap();
                    o.iter().flatten().collect()
                })
                .unwrap_or_default();
            assert_eq!(offsets.len() + decoded.ignored + decoded.rejects.len(), n, "{topic}: an input went missing");
            for r in &decoded.rejects {
                assert!(REASONS.contains(&r.error.reason()), "unknown reason {}", r.error.reason());
            }
            rows += got;
            ignored += decoded.ignored;
            rejected += decoded.rejects.len();
        }
    }
    eprintln!("fuzz native: {rows} rows, {ignored} ignored, {rejected} rejects");
    assert!(rows > 0 && ignored > 0 && rejected > 0, "the inputs should mix mapped, ignored and bad");
}

/// Replaces or removes one random node of `v` (a structural mutation: the
/// JSON stays valid, the shape does not).
fn mutate(rng: &mut ChaCha8Rng, v: &mut Value) {
    let depth = rng.random_range(0..6);
    mutate_at(rng, v, depth);
}

fn mutate_at(rng: &mut ChaCha8Rng, node: &mut Value, depth: usize) {
    if depth > 0 {
        match node {
            Value::Object(o) if !o.is_empty() => {
                let key = o.keys().nth(rng.random_range(0..o.len())).unwrap().clone();
                if rng.random_bool(0.15) {
                    o.remove(&key);
                } else {
                    mutate_at(rng, o.get_mut(&key).unwrap(), depth - 1);
                }
                return;
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.random_range(0..a.len());
                return mutate_at(rng, &mut a[i], depth - 1);
            }
            _ => {}
        }
    }
    *node = match rng.random_range(0..7) {
        0 => Value::Null,
        1 => json!(rng.random::<i64>()),
        2 => json!(-1.5e300),
        3 => json!(""),
        4 => json!("pkg:oci/x@sha256%3Azz"),
        5 => json!([]),
        _ => json!({}),
    };
}
