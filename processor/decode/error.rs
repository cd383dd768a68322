//! Why a payload could not be read, in words for the dead-letter topic and
//! a bounded label for metrics.

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
