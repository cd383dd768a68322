//! The processing core without Kafka: payloads → decode → state and pending
//! triggers → controls at a watermark → eviction. `vigil replay` and the
//! benchmarks drive it from files and memory; the streaming pipeline does
//! the same steps around its source and sink (plus partition ownership,
//! dead letters and commits).
//!
//! The watermark here is the lowest, over the topics seen, of each topic's
//! highest event time, minus the allowed lateness: input from files has no
//! partitions to wait for or go idle.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use datafusion::arrow::record_batch::RecordBatch;

use crate::controls::{append_on_time, Amendment, ControlSet, ControlSource, Evaluation, Running};
use crate::decode::{Decoded, Decoder, Format, RawMessage, Reject, SchemaResolver};
use crate::schema::{Catalog, Topic};
use crate::state::State;

pub struct Engine {
    catalog: Arc<Catalog>,
    decoders: [Decoder; 4],
    /// Decoders for inputs whose format is not the topic's configured one
    /// (replayed Avro container and Parquet files), made on first use.
    other_formats: Vec<(Topic, Format, Decoder)>,
    make_decoder: Box<dyn Fn(Topic, Format) -> Decoder + Send>,
    pub state: State,
    pub controls: ControlSet,
    lateness_ms: i64,
    /// Highest event time read per topic.
    max_event: [Option<i64>; 4],
    /// Topics the watermark waits for (default: those read so far).
    expected: Vec<Topic>,
    watermark: Option<i64>,
    /// The decision under way, with its watermark (see
    /// [`Engine::decide_behind`]).
    running: Option<(i64, Running)>,
    /// Time spent per stage, for the benchmarks' breakdown.
    pub stages: Stages,
}

/// Wall time spent in each stage of the engine.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stages {
    /// Payloads to Arrow.
    pub decode: Duration,
    /// Triggers to the controls, rows to state (and amendments).
    pub store: Duration,
    /// Control queries over due triggers.
    pub evaluate: Duration,
    pub evict: Duration,
}

/// What one call to [`Engine::ingest`] read.
#[derive(Debug, Default)]
pub struct Ingested {
    pub rows: usize,
    pub ignored: usize,
    pub rejects: Vec<Reject>,
    /// The newest event time among the rows.
    pub max_time: Option<i64>,
    /// Decisions that late rows changed.
    pub amendments: Vec<Amendment>,
    /// The evaluations of the decision under way, when late rows had to
    /// wait for it (it decided triggers they may change): reported before
    /// the amendments.
    pub decided: Vec<Evaluation>,
}

impl Engine {
    /// Plans the controls (plus the built-in evidence query unless one is
    /// given) with the config's formats, schemas, identities and lateness.
    pub async fn new(config: &Config, sources: &[ControlSource]) -> anyhow::Result<Engine> {
        let catalog = Catalog::builtin().map_err(anyhow::Error::msg)?;
        let resolver = Arc::new(
            SchemaResolver::new(config.schemas_dir.as_deref(), config.schema_registry_url.clone())
                .map_err(anyhow::Error::msg)?,
        );
        let make_decoder = {
            let (catalog, bounds) = (catalog.clone(), config.time_bounds);
            let (native, max_bytes) = (config.native.clone(), config.max_message_bytes);
            move |t: Topic, format| {
                Decoder::new(catalog.event(t).clone(), resolver.clone(), format, bounds)
                    .with_native(native.clone())
                    .with_max_bytes(max_bytes)
            }
        };
        let decoders = Topic::ALL.map(|t| make_decoder(t, config.formats[t.index()]));
        let (state, controls) = plan(&catalog, sources, &config.identities).await?;
        Ok(Engine {
            catalog,
            decoders,
            other_formats: Vec::new(),
            make_decoder: Box::new(make_decoder),
            state,
            controls,
            lateness_ms: config.watermarks.allowed_lateness_ms,
            max_event: [None; 4],
            expected: Vec::new(),
            watermark: None,
            running: None,
            stages: Stages::default(),
        })
    }

    /// Decodes `messages` of `topic` and takes in the good rows: triggers to
    /// the controls, events to state. `now_ms` is the wall clock for the
    /// decoder's event-time bounds.
    pub async fn ingest<'a>(
        &mut self,
        topic: Topic,
        messages: impl IntoIterator<Item = RawMessage<'a>>,
        now_ms: i64,
    ) -> anyhow::Result<Ingested> {
        self.ingest_as(topic, None, messages, now_ms).await
    }

    /// [`Engine::ingest`], reading the payloads in `format` instead of the
    /// topic's configured one.
    pub async fn ingest_as<'a>(
        &mut self,
        topic: Topic,
        format: Option<Format>,
        messages: impl IntoIterator<Item = RawMessage<'a>>,
        now_ms: i64,
    ) -> anyhow::Result<Ingested> {
        let decoded = self.decode_as(topic, format, messages, now_ms);
        Ok(self.take_in_decoding(topic, decoded, None, now_ms).await?.0)
    }

    /// The first half of [`Engine::ingest_as`]: the payloads decoded, not
    /// yet taken in.
    pub fn decode_as<'a>(
        &mut self,
        topic: Topic,
        format: Option<Format>,
        messages: impl IntoIterator<Item = RawMessage<'a>>,
        now_ms: i64,
    ) -> Decoded {
        let at = self.decoder_for(topic, format);
        let started = Instant::now();
        let decoded = decoder(&self.decoders, &self.other_formats, topic, at).decode(messages, now_ms);
        self.stages.decode += started.elapsed();
        decoded
    }

    /// The second half: takes `decoded` (rows of `topic`) in — triggers to
    /// the controls, events to state — while `next`, if given, is decoded
    /// on the pool (decoding and storing each keep one core busy alone).
    pub async fn take_in_decoding<'a>(
        &mut self,
        topic: Topic,
        decoded: Decoded,
        next: Option<(Topic, Option<Format>, &[RawMessage<'a>])>,
        now_ms: i64,
    ) -> anyhow::Result<(Ingested, Option<Decoded>)> {
        let time_index = self.catalog.event(topic).time_index;
        let Some((t, format, messages)) = next else {
            let started = Instant::now();
            let stored = Self::take_in(&mut self.controls, &mut self.state, topic, decoded, time_index, self.watermark);
            self.stages.store += started.elapsed();
            return Ok((self.finish_store(topic, stored?).await?, None));
        };
        let at = self.decoder_for(t, format);
        let (controls, state, watermark) = (&mut self.controls, &mut self.state, self.watermark);
        let decoder = decoder(&self.decoders, &self.other_formats, t, at);
        let ((next, decode_time), (stored, store_time)) = rayon::join(
            || timed(|| decoder.decode(messages.iter().copied(), now_ms)),
            || timed(|| Self::take_in(controls, state, topic, decoded, time_index, watermark)),
        );
        self.stages.decode += decode_time;
        self.stages.store += store_time;
        Ok((self.finish_store(topic, stored?).await?, Some(next)))
    }

    /// Where the decoder for `topic` in `format` is: `None` for the topic's
    /// configured one, else its place among the other formats' (made on
    /// first use).
    fn decoder_for(&mut self, topic: Topic, format: Option<Format>) -> Option<usize> {
        let format = format?;
        let known = self.other_formats.iter().position(|(t, f, _)| *t == topic && *f == format);
        Some(known.unwrap_or_else(|| {
            self.other_formats.push((topic, format, (self.make_decoder)(topic, format)));
            self.other_formats.len() - 1
        }))
    }

    /// What follows [`Engine::take_in`]: amendments for late rows, the
    /// topic's newest event time.
    async fn finish_store(
        &mut self,
        topic: Topic,
        stored: (Ingested, Option<RecordBatch>),
    ) -> anyhow::Result<Ingested> {
        let (mut ingested, late) = stored;
        if let Some(batch) = late {
            ingested.decided = self.settle().await?;
            let started = Instant::now();
            let time_index = self.catalog.event(topic).time_index;
            ingested.amendments =
                self.controls.append_amending(&mut self.state, topic, batch, time_index, self.watermark).await?;
            self.stages.store += started.elapsed();
        }
        if let Some(t) = ingested.max_time {
            let max = &mut self.max_event[topic.index()];
            *max = Some(max.map_or(t, |m| m.max(t)));
        }
        Ok(ingested)
    }

    /// [`Engine::ingest`] of a chunk of several topics' messages, stored
    /// in order while the next chunk (`following`) is decoded on the pool,
    /// its topics side by side: storing keeps one core busy, decoding the
    /// rest. `ahead` holds `parts` decoded already, if the call before
    /// decoded them; on return it holds `following` decoded.
    pub async fn ingest_all<'a>(
        &mut self,
        ahead: &mut Option<Vec<Decoded>>,
        parts: &[(Topic, Vec<RawMessage<'a>>)],
        following: Option<&[(Topic, Vec<RawMessage<'a>>)]>,
        now_ms: i64,
    ) -> anyhow::Result<Vec<Ingested>> {
        let decoded = match ahead.take() {
            Some(decoded) => decoded,
            None => self.decode_parts(parts, now_ms),
        };
        let (controls, state, watermark) = (&mut self.controls, &mut self.state, self.watermark);
        let (decoders, catalog) = (&self.decoders, &self.catalog);
        let topics = parts.iter().map(|(t, _)| *t);
        let (next, ((stored, rest), store_time)) = rayon::join(
            || following.map(|f| decode_parallel(decoders, f, now_ms)),
            || timed(|| Self::take_in_until_late(controls, state, catalog, topics, decoded, watermark)),
        );
        self.stages.store += store_time;
        if let Some((next, decode_time)) = next {
            self.stages.decode += decode_time;
            *ahead = Some(next);
        }
        let mut out = Vec::with_capacity(parts.len());
        for (topic, taken) in stored {
            out.push(self.finish_store(topic, taken?).await?);
        }
        for ((topic, _), decoded) in parts[out.len()..].iter().zip(rest) {
            out.push(self.take_in_decoding(*topic, decoded, None, now_ms).await?.0);
        }
        Ok(out)
    }

    /// Takes each topic's decoded rows in, in order, until one has late rows
    /// or fails: those are appended (waiting for the decision under way) or
    /// reported before anything after them is taken in, as
    /// `take_in_decoding` one at a time does. Returns what was taken in and
    /// the rows not yet taken in.
    fn take_in_until_late(
        controls: &mut ControlSet,
        state: &mut State,
        catalog: &Catalog,
        topics: impl Iterator<Item = Topic>,
        decoded: Vec<Decoded>,
        watermark: Option<i64>,
    ) -> (Vec<(Topic, Taken)>, Vec<Decoded>) {
        let mut stored = Vec::new();
        let mut rest = decoded.into_iter();
        for (topic, decoded) in topics.zip(rest.by_ref()) {
            let time_index = catalog.event(topic).time_index;
            let taken = Self::take_in(controls, state, topic, decoded, time_index, watermark);
            let stop = !matches!(taken, Ok((_, None)));
            stored.push((topic, taken));
            if stop {
                break;
            }
        }
        (stored, rest.collect())
    }

    /// `parts` decoded side by side on the pool.
    fn decode_parts(&mut self, parts: &[(Topic, Vec<RawMessage<'_>>)], now_ms: i64) -> Vec<Decoded> {
        let (decoded, took) = decode_parallel(&self.decoders, parts, now_ms);
        self.stages.decode += took;
        decoded
    }

    /// The part of ingest that needs no waiting: triggers admitted, and the
    /// rows appended to state unless some are late (then the batch is
    /// returned, for `append_amending`).
    fn take_in(
        controls: &mut ControlSet,
        state: &mut State,
        topic: Topic,
        decoded: Decoded,
        time_index: usize,
        watermark: Option<i64>,
    ) -> Taken {
        let mut out = Ingested { ignored: decoded.ignored, rejects: decoded.rejects, ..Ingested::default() };
        out.max_time = decoded.max_time.iter().map(|(_, t)| *t).max();
        let Some(batch) = decoded.batch else { return Ok((out, None)) };
        out.rows = batch.num_rows();
        controls.admit(topic, &batch, watermark)?;
        Ok((out, append_on_time(state, topic, batch, time_index, watermark)))
    }

    /// Decodes payloads of any topics straight into state, deciding nothing:
    /// history the benchmarks evaluate against.
    pub fn load(&mut self, chunk: &[(Topic, Vec<u8>)], first_offset: i64, now_ms: i64) -> anyhow::Result<()> {
        for topic in Topic::ALL {
            let decoded = self.decoders[topic.index()].decode(messages_of(chunk, topic, first_offset), now_ms);
            anyhow::ensure!(decoded.rejects.is_empty(), "{topic}: {:?}", decoded.rejects.first());
            if let Some(batch) = decoded.batch {
                self.state.append(topic, batch);
            }
        }
        Ok(())
    }

    /// Decodes `messages` and offers them to the controls as triggers only.
    pub fn admit_only<'a>(
        &mut self,
        topic: Topic,
        messages: impl IntoIterator<Item = RawMessage<'a>>,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        if let Some(batch) = self.decoders[topic.index()].decode(messages, now_ms).batch {
            self.controls.admit(topic, &batch, None)?;
        }
        Ok(())
    }

    /// Holds the watermark back until each of `topics` has been read from.
    pub fn expect(&mut self, topics: Vec<Topic>) {
        self.expected = topics;
    }

    /// The watermark the events read so far allow (it never goes back).
    pub fn watermark(&mut self) -> Option<i64> {
        if self.expected.iter().any(|t| self.max_event[t.index()].is_none()) {
            return self.watermark;
        }
        let lowest = self.max_event.iter().flatten().min()?;
        let candidate = lowest.saturating_sub(self.lateness_ms);
        self.watermark = Some(self.watermark.map_or(candidate, |w| w.max(candidate)));
        self.watermark
    }

    /// Runs every control over its triggers due at `watermark`, then evicts
    /// what no later decision needs. The evaluations of a decision still
    /// under way come first.
    pub async fn decide(&mut self, watermark: i64) -> anyhow::Result<Vec<Evaluation>> {
        let mut evaluations = self.decide_behind(watermark).await?;
        evaluations.extend(self.settle().await?);
        Ok(evaluations)
    }

    /// [`Engine::decide`] while ingest goes on: the decision at `watermark`
    /// is started (its queries planned over the state as it is now) and left
    /// running; the next call, [`Engine::settle`], or ingesting rows it may
    /// concern (at or behind `watermark`) collects it. Returns the
    /// evaluations of the decision before, which it finishes first.
    pub async fn decide_behind(&mut self, watermark: i64) -> anyhow::Result<Vec<Evaluation>> {
        let evaluations = self.settle().await?;
        self.watermark = Some(self.watermark.map_or(watermark, |w| w.max(watermark)));
        let started = Instant::now();
        let running = self.controls.start(&self.state, watermark).await?;
        self.stages.evaluate += started.elapsed();
        self.running = Some((watermark, running));
        Ok(evaluations)
    }

    /// Waits for the decision under way, if any, and evicts what no later
    /// decision needs; returns its evaluations.
    pub async fn settle(&mut self) -> anyhow::Result<Vec<Evaluation>> {
        let Some((watermark, running)) = self.running.take() else { return Ok(Vec::new()) };
        let started = Instant::now();
        let evaluations = self.controls.finish(running).await?;
        self.stages.evaluate += started.elapsed();
        let started = Instant::now();
        self.evict(watermark);
        self.controls.evict_decided(watermark);
        self.stages.evict += started.elapsed();
        Ok(evaluations)
    }

    /// Drops the events no decision at or after `watermark` can need.
    pub fn evict(&mut self, watermark: i64) {
        let horizons =
            Topic::ALL.map(|t| watermark.saturating_sub(crate::duration::millis(self.controls.retention(t))));
        self.state.evict(horizons);
    }
}

/// The decoder [`Engine::decoder_for`] placed: the topic's configured one,
/// or one of the other formats'.
fn decoder<'d>(
    decoders: &'d [Decoder; 4],
    other_formats: &'d [(Topic, Format, Decoder)],
    topic: Topic,
    at: Option<usize>,
) -> &'d Decoder {
    at.map_or(&decoders[topic.index()], |at| &other_formats[at].2)
}

/// One topic's rows taken in: what was ingested, and the batch if it has
/// late rows (for `append_amending`).
type Taken = anyhow::Result<(Ingested, Option<RecordBatch>)>;

/// Each part decoded by its topic's configured decoder, side by side on
/// the pool; with the time it took.
fn decode_parallel(
    decoders: &[Decoder; 4],
    parts: &[(Topic, Vec<RawMessage<'_>>)],
    now_ms: i64,
) -> (Vec<Decoded>, Duration) {
    use rayon::prelude::*;
    timed(|| parts.par_iter().map(|(t, m)| decoders[t.index()].decode(m.iter().copied(), now_ms)).collect())
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let out = f();
    (out, started.elapsed())
}

/// The messages of `topic` in a chunk of payloads of any topics, at offsets
/// counted from `first_offset` (partition 0).
pub fn messages_of(
    chunk: &[(Topic, Vec<u8>)],
    topic: Topic,
    first_offset: i64,
) -> impl Iterator<Item = RawMessage<'_>> {
    chunk
        .iter()
        .enumerate()
        .filter(move |(_, (t, _))| *t == topic)
        .map(move |(i, (_, p))| RawMessage::new(Some(p), 0, first_offset + i as i64))
}

/// A chunk's messages split by topic, as the pipeline splits a poll: the
/// parts [`Engine::ingest_all`] takes.
pub fn parts_of(chunk: &[(Topic, Vec<u8>)], first_offset: i64) -> Vec<(Topic, Vec<RawMessage<'_>>)> {
    Topic::ALL.map(|t| (t, messages_of(chunk, t, first_offset).collect())).into()
}

/// The controls planned against an empty state — the built-in evidence
/// query last unless one is given, as it reads the controls' decisions —
/// and that state, keeping the key indexes the controls read through.
pub async fn plan(
    catalog: &Catalog,
    sources: &[ControlSource],
    identities: &Arc<crate::identity::Identities>,
) -> Result<(State, ControlSet), crate::controls::ControlError> {
    let mut state = State::new(Topic::ALL.map(|t| &**catalog.event(t)));
    let mut sources = sources.to_vec();
    if !sources.iter().any(|s| s.sql.contains("-- record: evidence")) {
        sources.push(crate::controls::builtin_evidence());
    }
    let controls = ControlSet::plan(&sources, catalog, &state, identities).await?;
    for (topic, key) in controls.key_columns() {
        let schema = &catalog.event(topic).arrow;
        let names: Vec<&String> = key.0.iter().map(|p| schema.field(p.column).name()).collect();
        tracing::debug!(topic = topic.name(), columns = ?names, "state keeps a key index");
        state.index(topic, key, identities);
    }
    Ok((state, controls))
}

#[cfg(test)]
mod tests;
