//! `vigil replay`: re-evaluate a past period from files at full speed —
//! an audit period, a backfill after an outage, a new control tried on
//! history.
//!
//! Inputs are merged by event time a chunk at a time: the next chunk always
//! comes from the file whose events read so far are oldest, so files that
//! are each in time order (as exports are) replay as one stream. The
//! watermark is the lowest, over the input topics, of each one's newest
//! event minus the allowed lateness; out-of-order rows within it are late
//! and amend decisions exactly as in the stream. Each chunk is decoded while
//! the one before is taken in (`Engine::take_in_decoding`), and each decision
//! runs while the next chunks are read (`Engine::decide_behind`); a chunk
//! with rows it may concern waits for it. At the end everything due
//! by the last event (or `--until`) is decided; what falls due later is
//! reported as undecided.

mod container;
mod input;

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use crate::config::{Config, RawConfig};
use crate::controls::{Amendment, Evaluation};
use crate::decode::{Decoded, Format, RawMessage};
use crate::engine::Engine;
use crate::pipeline::wall_ms;
use crate::schema::Catalog;
use crate::violation::Violation;
pub use input::{InputFile, Kind};

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// Files or directories of events: TOPIC=PATH, or files named after
    /// their topic (deploy.jsonl, ci-q1.avro, change.parquet).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Config for formats, lateness, identities and [native] (default: the defaults).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Directory of .sql controls (default: controls.dir, or the built-in catalogue).
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Write the violations here as JSON lines (default: stdout).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Decide everything due by this time (RFC 3339) at the end; default:
    /// the newest event's time.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<i64>,
    /// An [identities] table (principal = [its names in each tool]) to
    /// compare people by, in place of the config's. Default: the config's,
    /// else an identities.toml in an input directory (as `vigil generate
    /// --out` writes).
    #[arg(long)]
    pub identities: Option<PathBuf>,
}

/// The identity map `vigil generate --out DIR` writes beside its events.
pub const IDENTITIES_FILE: &str = "identities.toml";

/// Sets `config`'s identity map from `--identities`, else (when the config
/// has none) from an identities.toml in an input directory; says on stderr
/// which map people are compared by, or that there is none.
fn identities(config: &mut Config, args: &ReplayArgs) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        identities: BTreeMap<String, Vec<String>>,
    }
    let beside = || {
        args.inputs
            .iter()
            .map(|a| a.split_once('=').map_or(a.as_str(), |(_, p)| p))
            .map(|p| std::path::Path::new(p).join(IDENTITIES_FILE))
            .find(|p| p.is_file())
    };
    let path = match &args.identities {
        Some(path) => Some(path.clone()),
        None if config.identities.is_empty() => beside(),
        None => {
            eprintln!("replay: people compared through the config's identity map");
            return Ok(());
        }
    };
    let Some(path) = path else {
        eprintln!(
            "replay: no identity map — a person is compared by the name each tool gives them; \
             give --identities FILE (an [identities] table) if their names differ between tools"
        );
        return Ok(());
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: File = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let map =
        crate::identity::Identities::new(&file.identities).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    eprintln!(
        "replay: people compared through the identity map in {} ({} people)",
        path.display(),
        file.identities.len()
    );
    config.identities = std::sync::Arc::new(map);
    Ok(())
}

fn parse_time(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("`{text}`: {e}; write RFC 3339, e.g. 2026-03-31T23:59:59Z"))
}

/// Payloads per chunk read from one file.
const CHUNK: usize = 8192;

pub async fn run(args: ReplayArgs) -> anyhow::Result<i32> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(anyhow::Error::msg)?,
        None => Config::validate(RawConfig::default()).map_err(anyhow::Error::msg)?,
    };
    identities(&mut config, &args)?;
    let sources = crate::cli::sources(args.queries.as_ref().or(config.controls_dir.as_ref()))?;
    let mut files = Vec::new();
    for arg in &args.inputs {
        files.extend(InputFile::parse_all(arg)?);
    }
    let catalog = Catalog::builtin().map_err(anyhow::Error::msg)?;
    let mut readers = files
        .into_iter()
        .map(|f| input::Reader::open(f.clone(), catalog.event(f.topic)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut engine = Engine::new(&config, &sources).await?;
    engine.expect(readers.iter().map(|r| r.file.topic).collect());
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut run = Run { started: Some(Instant::now()), ..Run::default() };
    let now = wall_ms();
    // Newest event time read per file: the oldest file is read next.
    let mut newest: Vec<Option<i64>> = vec![None; readers.len()];
    // Decisions run once per tick of wall time, as in the stream.
    let mut next_tick = Instant::now() + config.tick;
    // The chunk read and decoded while the one before was taken in: its
    // file and its payload count, and its rows.
    let mut ahead: Option<(usize, usize, Decoded)> = None;
    loop {
        let current = match ahead.take() {
            Some(current) => Some(current),
            None => read_next(&mut readers, &newest, &mut run)?.map(|(i, chunk)| {
                let (topic, format) = (readers[i].file.topic, format_of(readers[i].file.kind));
                (i, chunk.len(), engine.decode_as(topic, format, messages(&chunk), now))
            }),
        };
        let Some((i, events, decoded)) = current else { break };
        // Its newest event time, known once it is decoded, tells which file
        // is read next; that chunk is decoded while this one is taken in.
        if let Some(t) = decoded.max_time.iter().map(|(_, t)| *t).max() {
            newest[i] = Some(newest[i].map_or(t, |n| n.max(t)));
        }
        let next = read_next(&mut readers, &newest, &mut run)?;
        let payloads: Vec<RawMessage<'_>> = next.as_ref().map_or_else(Vec::new, |(_, chunk)| messages(chunk).collect());
        let to_decode =
            next.as_ref().map(|(j, _)| (readers[*j].file.topic, format_of(readers[*j].file.kind), &payloads[..]));
        let (ingested, decoded) = engine.take_in_decoding(readers[i].file.topic, decoded, to_decode, now).await?;
        ahead = next.zip(decoded).map(|((j, chunk), decoded)| (j, chunk.len(), decoded));
        let path = readers[i].file.path.display().to_string();
        run.events += events;
        run.rows += ingested.rows;
        run.ignored += ingested.ignored;
        for r in &ingested.rejects {
            run.reject(&path, r.offset, r.error.reason(), &r.error.to_string());
        }
        run.write(&engine, ingested.decided, &mut out)?;
        run.amend(&engine, ingested.amendments, &mut out)?;
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + config.tick;
            if let Some(w) = engine.watermark() {
                let evaluations = engine.decide_behind(w).await?;
                run.write(&engine, evaluations, &mut out)?;
            }
        }
        run.progress(&readers);
    }
    let end = args.until.or(newest.iter().flatten().max().copied());
    if let Some(end) = end {
        let evaluations = engine.decide(end).await?;
        run.write(&engine, evaluations, &mut out)?;
    }
    out.flush()?;
    run.summary(engine.controls.pending_rows());
    Ok(0)
}

/// Payloads read from a file, with their positions in it.
type Chunk = Vec<(i64, Vec<u8>)>;

/// The next chunk of the file whose events read so far are oldest, with
/// that file's index; `None` once every file is read. Records that could
/// not be read are reported here.
fn read_next(
    readers: &mut [input::Reader],
    newest: &[Option<i64>],
    run: &mut Run,
) -> anyhow::Result<Option<(usize, Chunk)>> {
    let next = (0..readers.len()).filter(|i| !readers[*i].done).min_by_key(|i| newest[*i].unwrap_or(i64::MIN));
    let Some(i) = next else { return Ok(None) };
    let mut bad = Vec::new();
    let chunk = readers[i].chunk(CHUNK, &mut bad)?;
    let path = readers[i].file.path.display().to_string();
    for (position, reason) in bad {
        run.reject(&path, position, "avro", &reason);
    }
    Ok(Some((i, chunk)))
}

/// How a file's payloads are decoded: JSON lines in the topic's own JSON,
/// Avro container records as plain Avro datums, Parquet rows as JSON.
fn format_of(kind: Kind) -> Option<Format> {
    match kind {
        Kind::JsonLines => None,
        Kind::Avro => Some(Format::AvroPlain),
        Kind::Parquet => Some(Format::Json),
    }
}

fn messages(chunk: &[(i64, Vec<u8>)]) -> impl Iterator<Item = RawMessage<'_>> {
    chunk.iter().map(|(position, p)| RawMessage::new(Some(p), 0, *position))
}

/// What a replay has done so far.
#[derive(Default)]
struct Run {
    started: Option<Instant>,
    events: usize,
    rows: usize,
    ignored: usize,
    rejected: BTreeMap<&'static str, usize>,
    violations: BTreeMap<String, usize>,
    ids: HashSet<String>,
    last_draw: Option<Instant>,
}

impl Run {
    fn reject(&mut self, path: &str, position: i64, reason: &'static str, message: &str) {
        let n: usize = self.rejected.values().sum();
        if n < 20 {
            self.clear_line();
            eprintln!("{path}:{position}: {message}");
        } else if n == 20 {
            eprintln!("(further bad records are only counted)");
        }
        *self.rejected.entry(reason).or_default() += 1;
    }

    fn write(&mut self, engine: &Engine, evaluations: Vec<Evaluation>, out: &mut dyn Write) -> anyhow::Result<()> {
        let detected_at = wall_ms();
        for evaluation in evaluations {
            let control = &engine.controls.controls()[evaluation.control];
            if control.meta.evidence {
                continue;
            }
            for finding in evaluation.findings {
                let v = Violation::new(control, finding, detected_at);
                self.emit(v, out)?;
            }
        }
        Ok(())
    }

    fn amend(&mut self, engine: &Engine, amendments: Vec<Amendment>, out: &mut dyn Write) -> anyhow::Result<()> {
        let detected_at = wall_ms();
        for amendment in amendments {
            match amendment {
                Amendment::New { control, finding } => {
                    self.emit(Violation::new(&engine.controls.controls()[control], finding, detected_at), out)?;
                }
                Amendment::Retracted { control, finding } => {
                    let v = Violation::retraction(&engine.controls.controls()[control], finding, detected_at, &[]);
                    if self.ids.remove(&v.id) {
                        *self.violations.entry(v.control_id.clone()).or_default() -= 1;
                        serde_json::to_writer(&mut *out, &v)?;
                        out.write_all(b"\n")?;
                    }
                }
            }
        }
        Ok(())
    }

    fn emit(&mut self, v: Violation, out: &mut dyn Write) -> anyhow::Result<()> {
        if self.ids.insert(v.id.clone()) {
            *self.violations.entry(v.control_id.clone()).or_default() += 1;
            serde_json::to_writer(&mut *out, &v)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// Redraws the progress bar (on a terminal, at most ten times a second).
    fn progress(&mut self, readers: &[input::Reader]) {
        if !std::io::stderr().is_terminal() || self.last_draw.is_some_and(|t| t.elapsed().as_millis() < 100) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let done = readers.iter().filter(|r| r.done).count();
        let width = 20;
        let filled = (done * width).checked_div(readers.len()).unwrap_or(width);
        let rate = self.events as f64 / self.started.map_or(1.0, |s| s.elapsed().as_secs_f64().max(1e-3));
        eprint!(
            "\rreplay [{}{}] {done}/{} files · {} events · {:.0} events/s ",
            "#".repeat(filled),
            " ".repeat(width - filled),
            readers.len(),
            self.events,
            rate
        );
        let _ = std::io::stderr().flush();
    }

    fn clear_line(&self) {
        if self.last_draw.is_some() {
            eprint!("\r{:80}\r", "");
        }
    }

    fn summary(&self, undecided: usize) {
        self.clear_line();
        let seconds = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let rejected: usize = self.rejected.values().sum();
        eprintln!(
            "replay: {} events in {seconds:.1} s ({:.0} events/s): {} rows, {} ignored, {rejected} rejected {:?}",
            self.events,
            self.events as f64 / seconds.max(1e-9),
            self.rows,
            self.ignored,
            self.rejected
        );
        eprintln!(
            "replay: {} violations {:?}; {undecided} triggers fall due after the end and stay undecided",
            self.ids.len(),
            self.violations
        );
    }
}
