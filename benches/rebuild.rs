//! State rebuild after a restart: the processor replays its retained events
//! from Kafka and rebuilds state and pending triggers. This measures the
//! in-process part of replaying 1,000,000 retained events — Confluent Avro
//! payloads decoded to Arrow, appended to state, offered to all thirteen
//! controls — without the broker (whose read rate issue 8's end-to-end bench
//! measures).
//!
//! `cargo bench --bench rebuild`

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vigil::controls::{builtin_sources, ControlSet};
use vigil::decode::{Decoder, Format, RawMessage, SchemaResolver, TimeBounds};
use vigil::generate::{generate, to_avro, GenConfig};
use vigil::schema::{Catalog, Topic};
use vigil::state::State;

const EVENTS: usize = 1_000_000;
const BATCH: usize = 8192;

fn rebuild(c: &mut Criterion) {
    let now = vigil::pipeline::wall_ms();
    let catalog = Catalog::builtin().unwrap();
    let resolver = Arc::new(SchemaResolver::new(None, None).unwrap());
    let (events, _) = generate(&GenConfig::new(EVENTS, 1, now));
    let payloads: Vec<(Topic, Vec<u8>)> =
        events.iter().map(|e| (e.topic, to_avro(catalog.event(e.topic), &e.fields).unwrap())).collect();
    let decoders = Topic::ALL
        .map(|t| Decoder::new(catalog.event(t).clone(), resolver.clone(), Format::Avro, TimeBounds::default()));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut group = c.benchmark_group("rebuild");
    group.sample_size(10).measurement_time(Duration::from_secs(60)).throughput(Throughput::Elements(EVENTS as u64));
    group.bench_function("1M retained events", |b| {
        b.iter(|| {
            let mut state = State::new(Topic::ALL.map(|t| &**catalog.event(t)));
            let mut controls =
                runtime.block_on(ControlSet::plan(&builtin_sources(), &catalog, &state, &Default::default())).unwrap();
            for chunk in payloads.chunks(BATCH) {
                for topic in Topic::ALL {
                    let raw = chunk
                        .iter()
                        .enumerate()
                        .filter(|(_, (t, _))| *t == topic)
                        .map(|(i, (_, p))| RawMessage::new(Some(p), 0, i as i64));
                    if let Some(batch) = decoders[topic.index()].decode(raw, now).batch {
                        controls.admit(topic, &batch, None).unwrap();
                        state.append(topic, batch);
                    }
                }
            }
            (state.usage(Topic::Ci).rows, controls.pending_rows())
        })
    });
    group.finish();
}

criterion_group!(benches, rebuild);
criterion_main!(benches);
