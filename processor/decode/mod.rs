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
mod json;

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;

pub use avro::{confluent_frame, SchemaResolver};

use crate::schema::EventSchema;
use builder::BatchBuilder;

/// How a topic's payloads are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Confluent wire format: magic 0, schema id, Avro datum.
    Avro,
    /// A bare Avro datum written with the canonical schema.
    AvroPlain,
    /// A JSON object.
    Json,
    /// JSON if the payload starts with `{`, Confluent Avro if it starts with 0.
    Auto,
    /// GitHub webhooks, mapped (see `native`).
    Github,
    /// CDEvents, mapped (see `native`).
    Cdevents,
    /// Jira issue webhooks, mapped (see `native`).
    Jira,
    /// ServiceNow change_request records, mapped (see `native`).
    Servicenow,
}

/// Why a payload could not be read. Every variant is bad data.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum DecodeError {
    #[error("empty payload (a tombstone or a producer bug); the event needs a body")]
    Empty,
    #[error("payload of {size} bytes exceeds decode.max_message_bytes ({max}); split the event or raise the limit")]
    Oversize { size: usize, max: usize },
    #[error("payload starts with byte {0:#04x}, neither `{{` (JSON) nor 0 (Confluent Avro); set the topic's format in the config if it is plain Avro")]
    UnknownEncoding(u8),
    #[error("Avro payload shorter than the 5-byte Confluent header ({0} bytes)")]
    ShortHeader(usize),
    #[error("unknown schema id {0}: not in schemas/ids.toml and not known to the schema registry; register the writer schema")]
    UnknownSchemaId(u32),
    #[error("schema id {id}: {reason}")]
    BadWriterSchema { id: u32, reason: String },
    #[error("invalid Avro datum ({0}); the payload is truncated or was written with another schema")]
    Avro(String),
    #[error("{0} trailing bytes after the Avro datum; the payload was written with another schema")]
    TrailingBytes(usize),
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("expected a JSON object, found {0}")]
    NotAnObject(&'static str),
    #[error("field `{field}` is missing or null; it is required")]
    Missing { field: String },
    #[error("field `{field}` should be {expected}, found {found}")]
    WrongType { field: String, expected: String, found: String },
    #[error("field `{field}` has unknown value `{value}`; expected one of {allowed}")]
    UnknownSymbol { field: String, value: String, allowed: String },
    #[error("field `{field}` = {value} is outside the accepted range ({bounds}); check the producer's clock and time unit (milliseconds)")]
    TimeOutOfRange { field: String, value: String, bounds: String },
    #[error("cannot map the payload onto a canonical event: {0}")]
    Unmappable(String),
}

impl DecodeError {
    /// A short, bounded label for metrics and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::Oversize { .. } => "oversize",
            DecodeError::UnknownEncoding(_) | DecodeError::ShortHeader(_) => "encoding",
            DecodeError::UnknownSchemaId(_) | DecodeError::BadWriterSchema { .. } => "schema",
            DecodeError::Avro(_) | DecodeError::TrailingBytes(_) => "avro",
            DecodeError::Json(_) | DecodeError::NotAnObject(_) => "json",
            DecodeError::Missing { .. } => "missing_field",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::UnknownSymbol { .. } => "unknown_symbol",
            DecodeError::TimeOutOfRange { .. } => "event_time",
            DecodeError::Unmappable(_) => "unmappable",
        }
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

/// A message as the decoder sees it: payload and Kafka coordinates.
#[derive(Clone, Copy, Debug)]
pub struct RawMessage<'a> {
    pub payload: Option<&'a [u8]>,
    pub partition: i32,
    pub offset: i64,
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

/// Decodes one topic's payloads.
pub struct Decoder {
    schema: Arc<EventSchema>,
    resolver: Arc<SchemaResolver>,
    format: Format,
    bounds: TimeBounds,
    max_bytes: usize,
}

/// Default largest payload accepted: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;

impl Decoder {
    pub fn new(schema: Arc<EventSchema>, resolver: Arc<SchemaResolver>, format: Format, bounds: TimeBounds) -> Decoder {
        Decoder { schema, resolver, format, bounds, max_bytes: DEFAULT_MAX_MESSAGE_BYTES }
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
    pub fn decode<'a>(&self, messages: impl IntoIterator<Item = RawMessage<'a>>, now_ms: i64) -> Decoded {
        let mut builder = BatchBuilder::new(&self.schema);
        let mut rejects = Vec::new();
        let mut max_time: Vec<(i32, i64)> = Vec::new();
        let mut ignored = 0;
        for m in messages {
            match self.decode_one(m.payload, now_ms) {
                Ok(rows) if rows.is_empty() => ignored += 1,
                Ok(rows) => {
                    for row in rows {
                        let t = match row[self.schema.time_index] {
                            Cell::Long(t) => t,
                            _ => unreachable!("event_time is checked to be a timestamp"),
                        };
                        match max_time.iter_mut().find(|(p, _)| *p == m.partition) {
                            Some((_, max)) => *max = (*max).max(t),
                            None => max_time.push((m.partition, t)),
                        }
                        builder.push(row, m.partition, m.offset);
                    }
                }
                Err(error) => rejects.push(Reject { partition: m.partition, offset: m.offset, error }),
            }
        }
        Decoded { batch: builder.finish(), rejects, max_time, ignored }
    }

    /// The rows of one payload: one for the canonical formats, zero or more
    /// for a tool-native one.
    fn decode_one(&self, payload: Option<&[u8]>, now_ms: i64) -> Result<Vec<Vec<Cell>>, DecodeError> {
        let bytes = payload.filter(|p| !p.is_empty()).ok_or(DecodeError::Empty)?;
        if bytes.len() > self.max_bytes {
            return Err(DecodeError::Oversize { size: bytes.len(), max: self.max_bytes });
        }
        let format = match self.format {
            Format::Auto => match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'{') => Format::Json,
                Some(0) => Format::Avro,
                _ => return Err(DecodeError::UnknownEncoding(bytes[0])),
            },
            f => f,
        };
        let row = match format {
            Format::Json => json::row(&self.schema, bytes)?,
            Format::Avro => avro::confluent_row(&self.schema, &self.resolver, bytes)?,
            Format::AvroPlain => avro::plain_row(&self.schema, bytes)?,
            Format::Github | Format::Cdevents | Format::Jira | Format::Servicenow => {
                return self.native_rows(format, bytes, now_ms)
            }
            Format::Auto => unreachable!("resolved above"),
        };
        self.check_times(&row, now_ms)?;
        Ok(vec![row])
    }

    fn native_rows(&self, format: Format, bytes: &[u8], now_ms: i64) -> Result<Vec<Vec<Cell>>, DecodeError> {
        use crate::native::{map, MapError, NativeFormat};
        let native = match format {
            Format::Github => NativeFormat::Github,
            Format::Jira => NativeFormat::Jira,
            Format::Servicenow => NativeFormat::Servicenow,
            _ => NativeFormat::Cdevents,
        };
        let events = map(native, self.schema.topic, bytes).map_err(|e| match e {
            MapError::Json(m) => DecodeError::Json(m),
            MapError::Unmappable(m) => DecodeError::Unmappable(m),
        })?;
        let mut rows = Vec::with_capacity(events.len());
        for event in events {
            let row = json::object_row(&self.schema, &event)?;
            self.check_times(&row, now_ms)?;
            rows.push(row);
        }
        Ok(rows)
    }

    fn check_times(&self, row: &[Cell], now_ms: i64) -> Result<(), DecodeError> {
        let lo = now_ms.saturating_sub(self.bounds.max_age_ms);
        let hi = now_ms.saturating_add(self.bounds.max_future_ms);
        for (spec, cell) in self.schema.fields.iter().zip(row) {
            if let (crate::schema::FieldKind::Timestamp, Cell::Long(t)) = (&spec.kind, cell) {
                // Only the event time is bounded: window ends and expiries may
                // legitimately lie far ahead.
                if spec.name == "event_time" && (*t < lo || *t > hi) {
                    return Err(DecodeError::TimeOutOfRange {
                        field: spec.name.clone(),
                        value: format_ms(*t),
                        bounds: format!("{} .. {}", format_ms(lo), format_ms(hi)),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Formats epoch milliseconds as RFC 3339, or the raw number if out of range.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}
