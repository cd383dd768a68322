//! In-process measurements: the core pipeline's throughput, the memory a
//! retained event costs, and how evaluation cost grows with retained state.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Config, RawConfig};
use crate::controls::builtin_sources;
use crate::decode::{Decoded, Format, RawMessage};
use crate::engine::{parts_of, Engine};
use crate::generate::{generate, to_avro, Event, GenConfig};
use crate::pipeline::wall_ms;
use crate::schema::{Catalog, Topic};
use crate::violation::violation_id;

/// Messages per decode batch, as the pipeline reads them.
const BATCH: usize = 8192;

/// The config the benchmarks run with: Confluent Avro on every topic, the
/// generated organisation's identities, everything else default.
pub fn config() -> anyhow::Result<Config> {
    let mut raw = RawConfig { identities: crate::generate::identities(), ..RawConfig::default() };
    for topic in Topic::ALL {
        raw.formats.insert(topic.name().to_string(), Format::Avro);
    }
    Config::validate(raw).map_err(anyhow::Error::msg)
}

/// Generated events encoded as the Confluent Avro a producer would send.
pub fn encode(catalog: &Catalog, events: &[Event]) -> anyhow::Result<Vec<(Topic, Vec<u8>)>> {
    events
        .iter()
        .map(|e| Ok((e.topic, to_avro(catalog.event(e.topic), &e.fields).map_err(anyhow::Error::msg)?)))
        .collect()
}

/// Feeds one chunk's parts (see [`parts_of`]) to the engine, topic by
/// topic, while the next chunk is decoded (`ahead` carries it to the next
/// call); returns the evaluations of a decision under way that late rows
/// waited for.
pub async fn feed<'a>(
    engine: &mut Engine,
    ahead: &mut Option<Vec<Decoded>>,
    parts: &[(Topic, Vec<RawMessage<'a>>)],
    next: Option<&[(Topic, Vec<RawMessage<'a>>)]>,
    now: i64,
) -> anyhow::Result<Vec<crate::controls::Evaluation>> {
    Ok(engine.ingest_all(ahead, parts, next, now).await?.into_iter().flat_map(|i| i.decided).collect())
}

#[derive(Debug, Serialize)]
pub struct CoreRun {
    pub events: usize,
    pub seconds: f64,
    pub events_per_s: f64,
    pub violations: usize,
    pub expected_violations: usize,
    /// The violations found equal the generator's ground truth.
    pub exact: bool,
    pub retained_events: usize,
    /// Arrow's own count of the retained batches' buffers.
    pub retained_arrow_bytes: usize,
    /// Growth of the live heap over the run (`None` without the counting
    /// allocator): state, pending and decided triggers, and anything leaked.
    pub heap_growth_bytes: Option<i64>,
    /// Seconds per stage: decode, store (triggers and state), evaluate, evict.
    pub stage_seconds: [f64; 4],
    /// Seconds of evaluation per control.
    pub control_seconds: std::collections::BTreeMap<String, f64>,
}

/// Decode → Arrow → state → all controls over `events` pre-encoded events
/// of the generator's mix, deciding as `vigil replay` does: once per tick
/// (`time.tick`, 1 s by default) of wall time, at the watermark reached,
/// each decision running while the next events are ingested.
pub async fn core(events: usize, seed: u64) -> anyhow::Result<CoreRun> {
    let now = wall_ms();
    let catalog = Catalog::builtin().map_err(anyhow::Error::msg)?;
    let (stream, truth) = generate(&GenConfig::new(events, seed, now));
    let payloads = encode(&catalog, &stream)?;
    let last_time = stream.last().map_or(now, |e| e.time_ms);
    drop(stream);
    let config = config()?;
    let mut engine = Engine::new(&config, &builtin_sources()).await?;
    // Setup's garbage is returned to the OS before timing starts, not during.
    crate::alloc::release_freed();
    // The evaluations are kept as they come; what the bench checks of them
    // (violation ids against the ground truth, seconds per control) is
    // worked out once the clock has stopped.
    let mut evaluations = Vec::new();
    let heap_before = crate::alloc::live_bytes();
    let started = Instant::now();
    let mut next_tick = started + config.tick;
    let mut chunks = payloads.chunks(BATCH).enumerate().map(|(n, chunk)| parts_of(chunk, (n * BATCH) as i64));
    let (mut parts, mut ahead) = (chunks.next(), None);
    while let Some(current) = parts.take() {
        parts = chunks.next();
        evaluations.extend(feed(&mut engine, &mut ahead, &current, parts.as_deref(), now).await?);
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + config.tick;
            if let Some(w) = engine.watermark() {
                evaluations.extend(engine.decide_behind(w).await?);
            }
        }
    }
    // The end of the stream: everything due by then is decided.
    let end = last_time + 2 * 86_400_000;
    evaluations.extend(engine.decide(end).await?);
    let seconds = started.elapsed().as_secs_f64();
    let (found, control_seconds) = collect(&engine, evaluations);
    let heap_growth_bytes = heap_growth(heap_before);
    let usage = Topic::ALL.map(|t| engine.state.usage(t));
    let expected: std::collections::BTreeSet<String> = truth.violations.iter().map(|v| v.id.clone()).collect();
    Ok(CoreRun {
        events,
        seconds,
        events_per_s: events as f64 / seconds,
        violations: found.len(),
        expected_violations: expected.len(),
        exact: found == expected,
        retained_events: usage.iter().map(|u| u.rows).sum(),
        retained_arrow_bytes: usage.iter().map(|u| u.bytes).sum(),
        heap_growth_bytes,
        control_seconds,
        stage_seconds: {
            let s = engine.stages;
            [s.decode, s.store, s.evaluate, s.evict].map(|d| d.as_secs_f64())
        },
    })
}

fn heap_growth(before: Option<i64>) -> Option<i64> {
    Some(crate::alloc::live_bytes()? - before?)
}

/// The violations among `evaluations` (by id) and each control's seconds
/// of evaluation.
fn collect(
    engine: &Engine,
    evaluations: Vec<crate::controls::Evaluation>,
) -> (std::collections::BTreeSet<String>, std::collections::BTreeMap<String, f64>) {
    let mut found = std::collections::BTreeSet::new();
    let mut seconds = std::collections::BTreeMap::new();
    for evaluation in evaluations {
        let meta = &engine.controls.controls()[evaluation.control].meta;
        *seconds.entry(meta.id.clone()).or_default() += evaluation.elapsed.as_secs_f64();
        if meta.evidence {
            continue;
        }
        found.extend(evaluation.findings.iter().map(|f| violation_id(&meta.id, &f.subject)));
    }
    (found, seconds)
}

#[derive(Debug, Serialize)]
pub struct EvalRun {
    pub retained_events: usize,
    pub due_deploys: usize,
    /// Median over the repetitions.
    pub seconds: f64,
    pub repetitions: usize,
    pub retained_arrow_bytes: usize,
    /// Growth of the live heap while the state was filled (`None` without
    /// the counting allocator).
    pub heap_growth_bytes: Option<i64>,
    /// Generated events read to retain them.
    pub generated_events: usize,
}

/// Evaluates `due` production deploys against `retained` events in state.
/// The state is filled as the pipeline fills it: generated periods of
/// 1,000,000 events over two days each, laid end to end (seeds differ), with
/// eviction at each period's end, until `retained` events are held. Then the
/// last period's first `due` production deploys are admitted and decided at
/// once, `repetitions` times.
pub async fn evaluation(retained: usize, due: usize, repetitions: usize) -> anyhow::Result<EvalRun> {
    let mut fixture = evaluation_fixture(retained, due).await?;
    let mut times = Vec::with_capacity(repetitions);
    for _ in 0..repetitions {
        times.push(fixture.run_once().await?);
    }
    times.sort();
    let usage = Topic::ALL.map(|t| fixture.engine.state.usage(t));
    Ok(EvalRun {
        retained_events: usage.iter().map(|u| u.rows).sum(),
        due_deploys: fixture.triggers.len(),
        seconds: times.get(times.len() / 2).copied().unwrap_or(Duration::ZERO).as_secs_f64(),
        repetitions,
        retained_arrow_bytes: usage.iter().map(|u| u.bytes).sum(),
        heap_growth_bytes: fixture.heap_growth_bytes,
        generated_events: fixture.generated,
    })
}

/// State holding `retained` events and `due` triggers to decide against it.
pub struct EvalFixture {
    pub engine: Engine,
    triggers: Vec<Vec<u8>>,
    now: i64,
    heap_growth_bytes: Option<i64>,
    generated: usize,
}

impl EvalFixture {
    /// Admits the due deploys, decides them all, forgets them; returns the
    /// time the controls took.
    pub async fn run_once(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let evaluations = self.decide().await?;
        let took = started.elapsed();
        if std::env::var_os("VIGIL_BENCH_DEBUG").is_some() {
            for e in &evaluations {
                let id = &self.engine.controls.controls()[e.control].meta.id;
                let (due, found, part) = (e.due_rows, e.findings.len(), e.read_in_part);
                eprintln!("  {id}: {due} due, {found} findings, {part} tables read in part, {:?}", e.elapsed);
            }
        }
        Ok(took)
    }

    /// Admits the due deploys, decides them all and forgets them.
    pub async fn decide(&mut self) -> anyhow::Result<Vec<crate::controls::Evaluation>> {
        let raw = self.triggers.iter().enumerate().map(|(i, p)| RawMessage::new(Some(p), 0, i as i64));
        self.engine.admit_only(Topic::Deploy, raw, self.now)?;
        let evaluations = self.engine.controls.evaluate(&self.engine.state, i64::MAX / 2).await?;
        anyhow::ensure!(!evaluations.is_empty(), "nothing was due");
        self.engine.controls.reset();
        Ok(evaluations)
    }
}

/// Fills state as the pipeline fills it (see [`evaluation`]).
pub async fn evaluation_fixture(retained: usize, due: usize) -> anyhow::Result<EvalFixture> {
    const PERIOD: usize = 1_000_000;
    const DAYS: u32 = 2;
    let now = wall_ms();
    let catalog = Catalog::builtin().map_err(anyhow::Error::msg)?;
    let heap_before = crate::alloc::live_bytes();
    let mut engine = Engine::new(&config()?, &builtin_sources()).await?;
    if std::env::var_os("VIGIL_BENCH_DEBUG").is_some() {
        eprintln!("  planned: heap grew {:?} B", heap_growth(heap_before));
    }
    // Enough periods to reach `retained` after eviction, ending two days ago.
    let periods =
        (retained.div_ceil(PERIOD.min(retained.saturating_mul(2)).max(20_000)) as f64 * 1.5).ceil() as usize + 1;
    let (mut offset, mut generated, mut period) = (0i64, 0usize, 0usize);
    // Production deploys of the period being loaded: the due triggers.
    let mut triggers: Vec<Vec<u8>> = Vec::new();
    let held = |engine: &Engine| Topic::ALL.iter().map(|t| engine.state.usage(*t).rows).sum::<usize>();
    // Small states (tests) come from smaller periods of the same span.
    let period_events = PERIOD.min(retained.saturating_mul(2)).max(20_000);
    while (held(&engine) < retained || triggers.len() < due) && period < periods {
        let mut gen = GenConfig::new(period_events, 100 + period as u64, now);
        gen.days = DAYS;
        // Each period its own deploys, changes and pull requests.
        gen.first_story = period as u64 * PERIOD as u64;
        gen.end_ms -= (periods - 1 - period) as i64 * i64::from(DAYS) * 86_400_000;
        let (stream, _) = generate(&gen);
        let payloads = encode(&catalog, &stream)?;
        let times: Vec<i64> = stream.iter().map(|e| e.time_ms).collect();
        // Finished production deploys: what most controls decide.
        let production: Vec<bool> = stream
            .iter()
            .map(|e| {
                e.topic == Topic::Deploy && e.fields["environment"] == "production" && e.fields["status"] == "succeeded"
            })
            .collect();
        drop(stream);
        triggers.clear();
        for (n, chunk) in payloads.chunks(BATCH).enumerate() {
            engine.load(chunk, offset, now)?;
            offset += chunk.len() as i64;
            generated += chunk.len();
            let range = n * BATCH..n * BATCH + chunk.len();
            let wanted = due.saturating_sub(triggers.len());
            triggers.extend(
                chunk
                    .iter()
                    .zip(&production[range.clone()])
                    .filter(|(_, p)| **p)
                    .map(|(c, _)| c.1.clone())
                    .take(wanted),
            );
            engine.evict(times[range.end - 1]);
            if held(&engine) >= retained && triggers.len() >= due {
                break;
            }
        }
        period += 1;
    }
    let heap_growth_bytes = heap_growth(heap_before);
    if std::env::var_os("VIGIL_BENCH_DEBUG").is_some() {
        for topic in Topic::ALL {
            let usage = engine.state.usage(topic);
            eprintln!(
                "  {}: {} rows, {} B, indexes {:?}",
                topic.name(),
                usage.rows,
                usage.bytes,
                engine.state.index_bytes(topic)
            );
        }
    }
    Ok(EvalFixture { engine, triggers, now, heap_growth_bytes, generated })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading state through the due rows' keys decides exactly as reading
    /// every table whole does: every control's findings and every evidence
    /// record, over a state large enough that the keys are used.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keyed_reads_decide_as_whole_tables_do() {
        let mut fixture = evaluation_fixture(60_000, 200).await.unwrap();
        let keyed = fixture.decide().await.unwrap();
        let in_part: Vec<(&str, usize)> = keyed
            .iter()
            .map(|e| (fixture.engine.controls.controls()[e.control].meta.id.as_str(), e.read_in_part))
            .collect();
        // The evidence query reads ci (its merge, reviews and runs), change
        // and access (by the deployer) in part; AC-01 reads access (by the
        // deployer, and that person's revocations) in part; CM-01 change.
        for (id, tables) in [("EVIDENCE", 3), ("AC-01", 1), ("CM-01", 1)] {
            assert!(in_part.contains(&(id, tables)), "{id} should read {tables} tables in part: {in_part:?}");
        }
        fixture.engine.controls.read_whole();
        let whole = fixture.decide().await.unwrap();
        assert_eq!(keyed.len(), whole.len());
        for (k, w) in keyed.iter().zip(&whole) {
            let id = &fixture.engine.controls.controls()[k.control].meta.id;
            assert_eq!(w.read_in_part, 0);
            let sorted = |e: &crate::controls::Evaluation| {
                let mut f = e.findings.clone();
                f.sort_by(|a, b| a.subject.cmp(&b.subject));
                f
            };
            assert_eq!(sorted(k), sorted(w), "{id}");
        }
    }
}
