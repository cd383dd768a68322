//! Replay inputs: files of one topic's events, read in chunks of payloads.
//!
//! - JSON lines (`.jsonl`, `.json`, `.ndjson`): one payload per line, in the
//!   topic's configured format (canonical JSON or a tool's own).
//! - Avro object container files (`.avro`): records resolved from the file's
//!   schema to the canonical one, then read as bare canonical datums. A file
//!   already in the canonical schema (codec `null` or `deflate`) is read
//!   block by block without resolving anything (`container`): 5–8× faster here.
//! - Parquet (`.parquet`): canonical columns; each row becomes a canonical
//!   JSON payload (timestamps as epoch milliseconds).
//!
//! A payload's position is its line (JSON lines) or record number, from 1,
//! so a bad record is named `file:position`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::Context;
use apache_avro::Schema as AvroSchema;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::schema::{EventSchema, Topic};

/// How an input file's payloads are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    JsonLines,
    Avro,
    Parquet,
}

/// An input file and the topic its events belong to.
#[derive(Clone, Debug)]
pub struct InputFile {
    pub topic: Topic,
    pub path: PathBuf,
    pub kind: Kind,
}

impl InputFile {
    /// `TOPIC=PATH`, or a path whose file name starts with a topic name
    /// (`deploy.jsonl`, `ci-2026-q1.parquet`). A directory stands for every
    /// such file in it.
    pub fn parse_all(arg: &str) -> anyhow::Result<Vec<InputFile>> {
        let (topic, path) = match arg.split_once('=') {
            Some((t, p)) if Topic::from_name(t).is_some() => (Topic::from_name(t), PathBuf::from(p)),
            _ => (None, PathBuf::from(arg)),
        };
        if path.is_dir() {
            let mut files = Vec::new();
            let entries = std::fs::read_dir(&path).with_context(|| format!("reading {}", path.display()))?;
            let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                if let (Some(kind), Some(t)) = (kind_of(&p), topic.or_else(|| topic_of(&p))) {
                    files.push(InputFile { topic: t, path: p, kind });
                }
            }
            anyhow::ensure!(
                !files.is_empty(),
                "{}: no .jsonl, .avro or .parquet files named after a topic (change, ci, access, deploy)",
                path.display()
            );
            return Ok(files);
        }
        let kind = kind_of(&path).with_context(|| {
            format!("{}: unknown file type; use .jsonl (JSON lines), .avro (container) or .parquet", path.display())
        })?;
        let topic = topic.or_else(|| topic_of(&path)).with_context(|| {
            format!(
                "{}: which topic? name the file after it (deploy.jsonl) or write deploy={}",
                path.display(),
                path.display()
            )
        })?;
        Ok(vec![InputFile { topic, path, kind }])
    }
}

fn kind_of(path: &Path) -> Option<Kind> {
    match path.extension()?.to_str()? {
        "jsonl" | "json" | "ndjson" => Some(Kind::JsonLines),
        "avro" => Some(Kind::Avro),
        "parquet" => Some(Kind::Parquet),
        _ => None,
    }
}

fn topic_of(path: &Path) -> Option<Topic> {
    let name = path.file_name()?.to_str()?;
    let stem = name.split(|c: char| !c.is_ascii_alphabetic()).next()?;
    Topic::from_name(stem)
}

/// An open input, read a chunk at a time.
pub struct Reader {
    pub file: InputFile,
    source: Source,
    /// Position of the next payload, from 1.
    next: i64,
    pub done: bool,
}

enum Source {
    Lines(BufReader<std::fs::File>),
    /// A container file in the canonical schema, read block by block.
    Blocks(Box<super::container::Blocks>),
    Avro(Box<apache_avro::Reader<'static, BufReader<std::fs::File>>>, Box<AvroSchema>),
    Parquet(ParquetRecordBatchReader, Vec<RecordBatch>),
}

impl Reader {
    pub fn open(file: InputFile, schema: &EventSchema) -> anyhow::Result<Reader> {
        let open = || std::fs::File::open(&file.path).with_context(|| format!("opening {}", file.path.display()));
        let source = match file.kind {
            Kind::JsonLines => Source::Lines(BufReader::with_capacity(1 << 20, open()?)),
            Kind::Avro if let Some(blocks) = super::container::Blocks::open(&file.path, schema)? => {
                Source::Blocks(Box::new(blocks))
            }
            Kind::Avro => {
                let reader = apache_avro::Reader::new(BufReader::new(open()?))
                    .with_context(|| format!("{}: not an Avro container file", file.path.display()))?;
                Source::Avro(Box::new(reader), Box::new(schema.avro.clone()))
            }
            Kind::Parquet => {
                let reader = ParquetRecordBatchReaderBuilder::try_new(open()?)
                    .and_then(|b| b.with_batch_size(8192).build())
                    .with_context(|| format!("{}: not a Parquet file", file.path.display()))?;
                Source::Parquet(reader, Vec::new())
            }
        };
        Ok(Reader { file, source, next: 1, done: false })
    }

    /// Up to `max` payloads and their positions (empty at the end), and the
    /// records that could be read but not made canonical.
    pub fn chunk(&mut self, max: usize, bad: &mut Vec<(i64, String)>) -> anyhow::Result<Vec<(i64, Vec<u8>)>> {
        let mut out = Vec::with_capacity(max.min(8192));
        let path = self.file.path.display().to_string();
        match &mut self.source {
            Source::Lines(lines) => {
                let mut line = Vec::new();
                while out.len() < max {
                    line.clear();
                    if lines.read_until(b'\n', &mut line).with_context(|| format!("reading {path}"))? == 0 {
                        break;
                    }
                    let position = self.next;
                    self.next += 1;
                    let trimmed = line.trim_ascii();
                    if !trimmed.is_empty() {
                        out.push((position, trimmed.to_vec()));
                    }
                }
            }
            Source::Blocks(blocks) => {
                while out.len() < max {
                    let Some(datum) = blocks.next_datum()? else { break };
                    out.push((self.next, datum.to_vec()));
                    self.next += 1;
                }
            }
            Source::Avro(reader, schema) => {
                for value in reader.by_ref().take(max) {
                    let position = self.next;
                    self.next += 1;
                    let value = value.with_context(|| format!("{path}:{position}: cannot read the Avro record"))?;
                    match value.resolve(schema).and_then(|v| apache_avro::to_avro_datum(schema, v)) {
                        Ok(datum) => out.push((position, datum)),
                        Err(e) => bad.push((position, format!("does not resolve to the canonical schema: {e}"))),
                    }
                }
            }
            Source::Parquet(reader, pending) => {
                while out.len() < max {
                    let batch = match pending.pop() {
                        Some(b) => b,
                        None => match reader.next() {
                            Some(b) => b.with_context(|| format!("reading {path}"))?,
                            None => break,
                        },
                    };
                    let take = (max - out.len()).min(batch.num_rows());
                    if take < batch.num_rows() {
                        pending.push(batch.slice(take, batch.num_rows() - take));
                    }
                    for payload in json_rows(&batch.slice(0, take)).with_context(|| format!("reading {path}"))? {
                        out.push((self.next, payload));
                        self.next += 1;
                    }
                }
            }
        }
        self.done = out.is_empty() && bad.is_empty();
        Ok(out)
    }
}

/// Each row as a JSON object, timestamps as epoch milliseconds.
fn json_rows(batch: &RecordBatch) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let (field, column) = match field.data_type() {
            DataType::Timestamp(_, _) | DataType::Date64 => {
                let millis = DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None);
                let ms = cast(&cast(column, &millis)?, &DataType::Int64)?;
                (Field::new(field.name(), DataType::Int64, true), ms)
            }
            _ => (field.as_ref().clone(), column.clone()),
        };
        fields.push(field);
        columns.push(column);
    }
    let batch = RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)?;
    let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(Vec::new());
    writer.write(&batch)?;
    writer.finish()?;
    Ok(writer.into_inner().split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect())
}
