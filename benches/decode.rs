//! Decode throughput: generator-realistic payloads to Arrow batches.
//!
//! `cargo bench --bench decode`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vigil::decode::{Decoder, Format, RawMessage, SchemaResolver, TimeBounds};
use vigil::generate::{generate, to_avro, to_json, GenConfig};
use vigil::schema::{Catalog, Topic};

const NOW: i64 = 1_790_000_000_000;

fn decode(c: &mut Criterion) {
    let catalog = Catalog::builtin().unwrap();
    let resolver = Arc::new(SchemaResolver::new(None, None).unwrap());
    let (events, _) = generate(&GenConfig::new(20_000, 1, NOW));
    let mut group = c.benchmark_group("decode");
    for (name, format) in [("avro", Format::Avro), ("json", Format::Json)] {
        let topic = Topic::Ci;
        let payloads: Vec<Vec<u8>> = events
            .iter()
            .filter(|e| e.topic == topic)
            .map(|e| match format {
                Format::Json => to_json(catalog.event(topic), &e.fields),
                _ => to_avro(catalog.event(topic), &e.fields).unwrap(),
            })
            .collect();
        let decoder = Decoder::new(catalog.event(topic).clone(), resolver.clone(), format, TimeBounds::default());
        group.throughput(Throughput::Elements(payloads.len() as u64));
        group.bench_with_input(BenchmarkId::new("ci", name), &payloads, |b, payloads| {
            b.iter(|| {
                let raw = payloads.iter().enumerate().map(|(i, p)| RawMessage::new(Some(p), 0, i as i64));
                decoder.decode(raw, NOW)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
