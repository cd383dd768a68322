//! Bytes to Arrow.
//!
//! A [`Decoder`] turns the payloads of one topic's messages into one
//! [`RecordBatch`] in the topic's canonical Arrow schema, plus a [`Reject`]
//! for every message it could not read. A reject is bad data: the pipeline
//! sends it to the dead-letter topic, counts it and carries on.
//!
//! Accepted encodings ([`Format`]): Avro in the Confluent wire format (magic
//! byte 0, a 4-byte big-endian schema id, then the datum, read with the writer
//! schema and resolved to the canonical one), plain Avro datums written with
//! the canonical schema, and JSON objects.

mod avro;
mod builder;
mod error;
mod fast;
mod input;
mod json;
mod json_fast;

pub(crate) use fast::Stepper;

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;

pub use avro::{confluent_frame, confluent_header, SchemaResolver};
pub use error::DecodeError;

use crate::native::{NativeConfig, NativeFormat, Payload};
use crate::schema::EventSchema;
use builder::BatchBuilder;

/// How a topic's payloads are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Confluent wire format: magic 0, schema id, Avro datum.
    Avro,
    /// A bare Avro datum written with the canonical schema.
    AvroPlain,
    /// A JSON object in the canonical form.
    Json,
    /// Confluent Avro if the payload starts with 0; if it starts with `{`,
    /// a tool's format when only that tool sends its shape
    /// ([`crate::native::detect`]), else canonical JSON.
    Auto,
    /// A tool's own format, mapped (see `native`).
    Native(NativeFormat),
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        use clap::ValueEnum;
        Ok(match s {
            "avro" => Format::Avro,
            "avro-plain" => Format::AvroPlain,
            "json" => Format::Json,
            "auto" => Format::Auto,
            _ => Format::Native(NativeFormat::from_str(s, false).map_err(|_| {
                let tools: Vec<String> = NativeFormat::value_variants()
                    .iter()
                    .filter_map(|f| f.to_possible_value().map(|v| v.get_name().to_string()))
                    .collect();
                format!("unknown format `{s}`; use avro, avro-plain, json, auto or a tool's: {}", tools.join(", "))
            })?),
        })
    }
}

impl<'de> serde::Deserialize<'de> for Format {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Format, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// One value of a decoded row, before it goes into an Arrow column.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cell {
    Null,
    Str(String),
    Long(i64),
    Int(i32),
    Bool(bool),
}

impl Cell {
    pub(crate) fn as_slot(&self) -> fast::Slot<'_> {
        match self {
            Cell::Null => fast::Slot::Null,
            Cell::Str(s) => fast::Slot::Str(s),
            Cell::Long(v) => fast::Slot::Long(*v),
            Cell::Int(v) => fast::Slot::Int(*v),
            Cell::Bool(v) => fast::Slot::Bool(*v),
        }
    }
}

/// Kafka record headers, in order: name and value (None for a null value).
pub type Headers = Vec<(String, Option<Vec<u8>>)>;

/// What one decoder call has kept and rejected so far.
struct Rows {
    builder: BatchBuilder,
    rejects: Vec<Reject>,
    max_time: Vec<(i32, i64)>,
}

/// A message as the decoder sees it: payload, headers and Kafka coordinates.
#[derive(Clone, Copy, Debug)]
pub struct RawMessage<'a> {
    pub payload: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<Vec<u8>>)],
    pub partition: i32,
    pub offset: i64,
}

impl<'a> RawMessage<'a> {
    /// A message without headers.
    pub fn new(payload: Option<&'a [u8]>, partition: i32, offset: i64) -> RawMessage<'a> {
        RawMessage { payload, headers: &[], partition, offset }
    }
}

/// A message that could not be decoded.
#[derive(Clone, Debug)]
pub struct Reject {
    pub partition: i32,
    pub offset: i64,
    pub error: DecodeError,
}

/// The result of decoding a run of messages from one topic.
#[derive(Debug)]
pub struct Decoded {
    /// The good rows, in message order; `None` when there were none.
    pub batch: Option<RecordBatch>,
    pub rejects: Vec<Reject>,
    /// Highest event time among the good rows of each partition.
    pub max_time: Vec<(i32, i64)>,
    /// Tool-native payloads that are valid but carry nothing Vigil uses.
    pub ignored: usize,
}

/// Messages a [`Decoder::decode`] call needs before it splits them over two
/// threads: below this, starting a thread costs more than it saves.
pub const SPLIT_AT: usize = 1024;

impl Decoded {
    /// Adds what a later run of messages decoded to this one's.
    fn append(&mut self, later: Decoded) {
        self.batch = match (self.batch.take(), later.batch) {
            (Some(a), Some(b)) => Some(
                datafusion::arrow::compute::concat_batches(&a.schema(), [&a, &b])
                    .expect("batches a decoder built share its schema"),
            ),
            (a, b) => a.or(b),
        };
        self.rejects.extend(later.rejects);
        for (partition, t) in later.max_time {
            note_max(&mut self.max_time, partition, t);
        }
        self.ignored += later.ignored;
    }
}

/// Limits on event time, relative to the wall clock at decode time.
#[derive(Clone, Copy, Debug)]
pub struct TimeBounds {
    pub max_age_ms: i64,
    pub max_future_ms: i64,
}

impl Default for TimeBounds {
    fn default() -> Self {
        TimeBounds { max_age_ms: 10 * 365 * 86_400_000, max_future_ms: 86_400_000 }
    }
}

/// The `[decode]` bounds a payload is held to.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub time: TimeBounds,
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { time: TimeBounds::default(), max_bytes: DEFAULT_MAX_MESSAGE_BYTES }
    }
}

/// Decodes one topic's payloads.
pub struct Decoder {
    schema: Arc<EventSchema>,
    resolver: Arc<SchemaResolver>,
    format: Format,
    bounds: TimeBounds,
    max_bytes: usize,
    native: Arc<NativeConfig>,
    /// The canonical schema compiled for bare datums (`avro-plain`).
    plain: Option<Arc<fast::Plan>>,
    /// Writer schemas compiled for the fast path, by schema id (None: that
    /// writer is read the slow way).
    plans: std::sync::Mutex<std::collections::HashMap<u32, Option<Arc<fast::Plan>>>>,
}

/// Default largest payload accepted: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

impl Decoder {
    pub fn new(schema: Arc<EventSchema>, resolver: Arc<SchemaResolver>, format: Format, bounds: TimeBounds) -> Decoder {
        let native = Arc::new(NativeConfig::default());
        let plain = fast::Plan::compile(&schema.avro, &schema).map(Arc::new);
        Decoder {
            schema,
            resolver,
            format,
            bounds,
            max_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            native,
            plain,
            plans: Default::default(),
        }
    }

    /// What tools' events mean (`[native]` config), for the native formats.
    pub fn with_native(mut self, native: Arc<NativeConfig>) -> Decoder {
        self.native = native;
        self
    }

    /// Index of the event_time column in the decoded batches.
    pub fn time_index(&self) -> usize {
        self.schema.time_index
    }

    /// Rejects payloads larger than `max_bytes` (reason `oversize`).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Decoder {
        self.max_bytes = max_bytes;
        self
    }

    /// Decodes `messages` with `now_ms` as the wall clock for time bounds.
    /// A call with [`SPLIT_AT`] messages or more decodes the second half on a
    /// pool thread while this one decodes the first, when there is a core
    /// to spare; the result is the same either way.
    pub fn decode<'a>(&self, messages: impl IntoIterator<Item = RawMessage<'a>>, now_ms: i64) -> Decoded {
        let messages: Vec<RawMessage<'a>> = messages.into_iter().collect();
        if messages.len() < SPLIT_AT || crate::cores() < 2 {
            return self.decode_in_line(&messages, now_ms);
        }
        let (first, second) = messages.split_at(messages.len() / 2);
        // Rayon's threads persist, and so do their allocator heaps: a thread
        // started per call would fault fresh pages in every time.
        let (mut out, rest) =
            rayon::join(|| self.decode_in_line(first, now_ms), || self.decode_in_line(second, now_ms));
        out.append(rest);
        out
    }

    /// As [`Decoder::decode`], all on the calling thread: for a caller that
    /// already overlaps decoding with other work (the streaming pipeline
    /// decodes one batch while it stores the last), where splitting a batch
    /// over the pool's threads as well cost more CPU than it saved.
    pub fn decode_here<'a>(&self, messages: impl IntoIterator<Item = RawMessage<'a>>, now_ms: i64) -> Decoded {
        let messages: Vec<RawMessage<'a>> = messages.into_iter().collect();
        self.decode_in_line(&messages, now_ms)
    }

    fn decode_in_line(&self, messages: &[RawMessage<'_>], now_ms: i64) -> Decoded {
        let mut out = Rows {
            builder: BatchBuilder::new(&self.schema, messages.len()),
            rejects: Vec::new(),
            max_time: Vec::new(),
        };
        let mut ignored = 0;
        let mut slots = Vec::new();
        let mut vals = Vec::new();
        let mut current = None;
        for &m in messages {
            if let Some((bytes, unknown)) = self.json_payload(m.payload) {
                if json_fast::row(&self.schema, bytes, unknown, &mut vals).is_some() {
                    self.keep_fast(&mut out, vals.iter().map(json_fast::Val::slot), m, now_ms);
                    continue;
                }
            }
            if let Some((plan, datum)) = self.fast_plan(m.payload, &mut current) {
                if plan.read(datum, &mut slots).is_some() {
                    self.keep_fast(&mut out, slots.iter().copied(), m, now_ms);
                    continue;
                }
            }
            match self.decode_one(m.payload, m.headers, now_ms) {
                Ok(rows) if rows.is_empty() => ignored += 1,
                Ok(rows) => {
                    for row in rows {
                        let t = match row[self.schema.time_index] {
                            Cell::Long(t) => t,
                            _ => unreachable!("event_time is checked to be a timestamp"),
                        };
                        note_max(&mut out.max_time, m.partition, t);
                        out.builder.push(row, m.partition, m.offset);
                    }
                }
                Err(error) => out.rejects.push(Reject { partition: m.partition, offset: m.offset, error }),
            }
        }
        Decoded { batch: out.builder.finish(), rejects: out.rejects, max_time: out.max_time, ignored }
    }

    /// Keeps a row a fast path read, or rejects it if its event time is out
    /// of bounds.
    fn keep_fast<'s>(
        &self,
        out: &mut Rows,
        row: impl Iterator<Item = fast::Slot<'s>> + Clone,
        m: RawMessage<'_>,
        now_ms: i64,
    ) {
        let Some(fast::Slot::Long(t)) = row.clone().nth(self.schema.time_index) else {
            unreachable!("event_time is a required timestamp")
        };
        match self.check_time(t, now_ms) {
            Ok(()) => {
                note_max(&mut out.max_time, m.partition, t);
                out.builder.push_each(row, m.partition, m.offset);
            }
            Err(error) => out.rejects.push(Reject { partition: m.partition, offset: m.offset, error }),
        }
    }

    /// A payload the direct JSON path may read, and what it does with keys
    /// that name no field: JSON by configuration (skipped), or by its first
    /// byte when the format is detected. A detected payload is declined at
    /// its first unknown key, so a tool's own payload costs a few bytes of
    /// reading before `native::detect` judges it; one read whole has
    /// `event_id` and `event_time` (required in every canonical schema),
    /// which is what makes `native::detect` call it canonical.
    fn json_payload<'p>(&self, payload: Option<&'p [u8]>) -> Option<(&'p [u8], json_fast::Unknown)> {
        let bytes = self.fast_readable(payload)?;
        match self.format {
            Format::Json => Some((bytes, json_fast::Unknown::Skip)),
            Format::Auto if first_byte(bytes) == Some(b'{') => Some((bytes, json_fast::Unknown::Decline)),
            _ => None,
        }
    }

    /// A payload a fast path may read: not empty, within the size limit
    /// (the general path words the error for anything else).
    fn fast_readable<'p>(&self, payload: Option<&'p [u8]>) -> Option<&'p [u8]> {
        payload.filter(|p| !p.is_empty() && p.len() <= self.max_bytes)
    }

    /// The compiled plan and the datum of an Avro payload the fast path may
    /// read; `current` keeps the last schema id's plan between messages.
    fn fast_plan<'p, 'c>(
        &self,
        payload: Option<&'p [u8]>,
        current: &'c mut Option<(u32, Option<Arc<fast::Plan>>)>,
    ) -> Option<(&'c fast::Plan, &'p [u8])> {
        let bytes = self.fast_readable(payload)?;
        match self.format {
            Format::AvroPlain => {
                *current = Some((u32::MAX, self.plain.clone()));
                Some((current.as_ref()?.1.as_deref()?, bytes))
            }
            Format::Avro | Format::Auto if bytes[0] == 0 && bytes.len() >= 5 => {
                let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                if current.as_ref().is_none_or(|(known, _)| *known != id) {
                    let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
                    let plan = plans
                        .entry(id)
                        .or_insert_with(|| {
                            let writer = self.resolver.resolve(id).ok()?;
                            fast::Plan::compile(&writer.schema, &self.schema).map(Arc::new)
                        })
                        .clone();
                    *current = Some((id, plan));
                }
                Some((current.as_ref()?.1.as_deref()?, &bytes[5..]))
            }
            _ => None,
        }
    }

    /// The rows of one payload: one for the canonical formats, zero or more
    /// for a tool-native one.
    fn decode_one(
        &self,
        payload: Option<&[u8]>,
        headers: &[(String, Option<Vec<u8>>)],
        now_ms: i64,
    ) -> Result<Vec<Vec<Cell>>, DecodeError> {
        let bytes = payload.filter(|p| !p.is_empty()).ok_or(DecodeError::Empty)?;
        if bytes.len() > self.max_bytes {
            return Err(DecodeError::Oversize { size: bytes.len(), max: self.max_bytes });
        }
        let row = match self.format {
            Format::Json => json::row(&self.schema, bytes)?,
            Format::Avro => avro::confluent_row(&self.schema, &self.resolver, bytes)?,
            Format::AvroPlain => avro::plain_row(&self.schema, bytes)?,
            Format::Native(native) => {
                let value = json::parse(bytes)?;
                return self.native_rows(native, Payload { value: &value, headers }, now_ms);
            }
            Format::Auto => match first_byte(bytes) {
                Some(b'{') => {
                    let value = json::parse(bytes)?;
                    let payload = Payload { value: &value, headers };
                    match crate::native::detect(payload) {
                        Some(native) => return self.native_rows(native, payload, now_ms),
                        None => json::value_row(&self.schema, &value)?,
                    }
                }
                Some(0) => avro::confluent_row(&self.schema, &self.resolver, bytes)?,
                _ => return Err(DecodeError::UnknownEncoding(bytes[0])),
            },
        };
        self.check_row_time(&row, now_ms)?;
        Ok(vec![row])
    }

    fn native_rows(
        &self,
        native: NativeFormat,
        payload: Payload<'_>,
        now_ms: i64,
    ) -> Result<Vec<Vec<Cell>>, DecodeError> {
        use crate::native::MapError;
        let events = match crate::native::map(native, self.schema.topic, payload, &self.native) {
            Ok(events) => events,
            // Counted as ignored, as a payload that maps to nothing is.
            Err(MapError::Ignored(_)) => Vec::new(),
            Err(MapError::Json(m)) => return Err(DecodeError::Json(m)),
            Err(MapError::Unmappable(m)) => return Err(DecodeError::Unmappable(m)),
        };
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            let row = json::object_row(&self.schema, &event)?;
            self.check_row_time(&row, now_ms)?;
            rows.push(row);
        }
        Ok(rows)
    }

    fn check_row_time(&self, row: &[Cell], now_ms: i64) -> Result<(), DecodeError> {
        match row[self.schema.time_index] {
            Cell::Long(t) => self.check_time(t, now_ms),
            _ => unreachable!("event_time is checked to be a timestamp"),
        }
    }

    /// Only the event time is bounded: window ends and expiries may
    /// legitimately lie far ahead.
    fn check_time(&self, t: i64, now_ms: i64) -> Result<(), DecodeError> {
        let lo = now_ms.saturating_sub(self.bounds.max_age_ms);
        let hi = now_ms.saturating_add(self.bounds.max_future_ms);
        if t < lo || t > hi {
            return Err(DecodeError::TimeOutOfRange {
                field: self.schema.fields[self.schema.time_index].name.clone(),
                value: format_ms(t),
                bounds: format!("{} .. {}", format_ms(lo), format_ms(hi)),
            });
        }
        Ok(())
    }
}

/// The first byte of a payload that is not JSON whitespace: `{` or 0
/// tells JSON from Confluent Avro under `auto`.
fn first_byte(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !b.is_ascii_whitespace())
}

/// Raises `partition`'s highest event time to `t`.
fn note_max(max_time: &mut Vec<(i32, i64)>, partition: i32, t: i64) {
    match max_time.iter_mut().find(|(p, _)| *p == partition) {
        Some((_, max)) => *max = (*max).max(t),
        None => max_time.push((partition, t)),
    }
}

/// Formats epoch milliseconds as RFC 3339, or the raw number if out of range.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}
