//! Evaluation: 1,000 due production deploys decided by every control against
//! retained state of 100,000 and 1,000,000 events (`vigil bench` compares
//! 1,000,000 with 10,000,000 in one run).
//!
//! `cargo bench --bench evaluate`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use vigil::bench::core::{evaluation_fixture, EvalFixture};

fn evaluate(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let mut group = c.benchmark_group("evaluate");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    for retained in [100_000, 1_000_000] {
        let mut fixture: EvalFixture = runtime.block_on(evaluation_fixture(retained, 1_000)).unwrap();
        group.bench_with_input(BenchmarkId::new("1000 due deploys", retained), &retained, |b, _| {
            b.iter(|| runtime.block_on(fixture.run_once()).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
