//! The canonical events and their Arrow form.
//!
//! The Avro schemas in `schemas/` are the single source of truth: the Arrow
//! schema of each topic's state table, the decoder's field checks and the
//! generator's encoding are all derived from them. The files are compiled in,
//! so the binary works from any directory.
//!
//! Every state table has two extra columns after the Avro fields: `_partition`
//! (Int32) and `_offset` (Int64), the Kafka coordinates of the row, so that
//! evidence can point back at the record that proves it.

use std::fmt;
use std::sync::Arc;

use apache_avro::Schema as AvroSchema;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// One of the four input topics, by its logical (table) name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    Change,
    Ci,
    Access,
    Deploy,
}

impl Topic {
    pub const ALL: [Topic; 4] = [Topic::Change, Topic::Ci, Topic::Access, Topic::Deploy];

    /// The logical name: the SQL table name and the config key.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Change => "change",
            Topic::Ci => "ci",
            Topic::Access => "access",
            Topic::Deploy => "deploy",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }

    fn avsc(self) -> &'static str {
        match self {
            Topic::Change => include_str!("../schemas/change.avsc"),
            Topic::Ci => include_str!("../schemas/ci.avsc"),
            Topic::Access => include_str!("../schemas/access.avsc"),
            Topic::Deploy => include_str!("../schemas/deploy.avsc"),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The Avro text of the violation record.
pub const VIOLATION_AVSC: &str = include_str!("../schemas/violation.avsc");
/// The local schema-id table shipped in `schemas/ids.toml`.
pub const IDS_TOML: &str = include_str!("../schemas/ids.toml");

/// What a field holds, as far as decoding and Arrow are concerned.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldKind {
    Str,
    Long,
    Int,
    Bool,
    /// Milliseconds since the Unix epoch, UTC.
    Timestamp,
    /// A string restricted to these symbols.
    Enum(Vec<String>),
}

impl FieldKind {
    pub fn describe(&self) -> String {
        match self {
            FieldKind::Str => "a string".into(),
            FieldKind::Long => "an integer".into(),
            FieldKind::Int => "a 32-bit integer".into(),
            FieldKind::Bool => "true or false".into(),
            FieldKind::Timestamp => "a timestamp (RFC 3339 text or epoch milliseconds)".into(),
            FieldKind::Enum(symbols) => format!("one of {}", symbols.join(", ")),
        }
    }

    fn arrow(&self) -> DataType {
        match self {
            FieldKind::Str => DataType::Utf8,
            // A symbol's index per row (2 bytes, not the text and a 4-byte
            // offset); every batch shares one array of the symbols.
            FieldKind::Enum(_) => DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Utf8)),
            FieldKind::Long => DataType::Int64,
            FieldKind::Int => DataType::Int32,
            FieldKind::Bool => DataType::Boolean,
            FieldKind::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }
}

/// One field of a canonical event.
#[derive(Clone, Debug)]
pub struct FieldSpec {
    pub name: String,
    pub kind: FieldKind,
    pub required: bool,
}

/// A canonical event type: its Avro schema, fields and Arrow schema.
#[derive(Debug)]
pub struct EventSchema {
    pub topic: Topic,
    pub avro: AvroSchema,
    pub fields: Vec<FieldSpec>,
    /// Avro fields followed by `_partition` and `_offset`.
    pub arrow: SchemaRef,
    /// Position of `event_time` in `fields` (and in `arrow`).
    pub time_index: usize,
    /// sha-256 of the schema's canonical form: equal writer schemas need no
    /// resolution.
    pub fingerprint: [u8; 32],
}

pub const PARTITION_COLUMN: &str = "_partition";
pub const OFFSET_COLUMN: &str = "_offset";

impl EventSchema {
    fn load(topic: Topic) -> Result<EventSchema, String> {
        let avro = AvroSchema::parse_str(topic.avsc()).map_err(|e| format!("schemas/{topic}.avsc: {e}"))?;
        let fields = field_specs(&avro).map_err(|e| format!("schemas/{topic}.avsc: {e}"))?;
        let time_index = fields
            .iter()
            .position(|f| f.name == "event_time" && f.kind == FieldKind::Timestamp && f.required)
            .ok_or_else(|| format!("schemas/{topic}.avsc: needs a required timestamp `event_time`"))?;
        let mut arrow_fields: Vec<Field> =
            fields.iter().map(|f| Field::new(&f.name, f.kind.arrow(), !f.required)).collect();
        arrow_fields.push(Field::new(PARTITION_COLUMN, DataType::Int32, false));
        arrow_fields.push(Field::new(OFFSET_COLUMN, DataType::Int64, false));
        let fingerprint = fingerprint(&avro);
        Ok(EventSchema { topic, avro, fields, arrow: Arc::new(Schema::new(arrow_fields)), time_index, fingerprint })
    }
}

/// sha-256 of an Avro schema's parsing canonical form.
pub fn fingerprint(schema: &AvroSchema) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(schema.canonical_form().as_bytes()).into()
}

/// Flattens an Avro record schema into field specs. Optional fields are
/// unions of `null` and one other type.
pub fn field_specs(schema: &AvroSchema) -> Result<Vec<FieldSpec>, String> {
    let AvroSchema::Record(record) = schema else {
        return Err("the top-level schema must be a record".into());
    };
    record
        .fields
        .iter()
        .map(|f| {
            let (inner, required) = match &f.schema {
                AvroSchema::Union(u) => {
                    let non_null: Vec<&AvroSchema> = u.variants().iter().filter(|s| **s != AvroSchema::Null).collect();
                    match non_null.as_slice() {
                        [one] if u.variants().len() == 2 => (*one, false),
                        _ => return Err(format!("field `{}`: only [null, T] unions are supported", f.name)),
                    }
                }
                other => (other, true),
            };
            let kind = match inner {
                AvroSchema::String => FieldKind::Str,
                AvroSchema::Long => FieldKind::Long,
                AvroSchema::Int => FieldKind::Int,
                AvroSchema::Boolean => FieldKind::Bool,
                AvroSchema::TimestampMillis => FieldKind::Timestamp,
                AvroSchema::Enum(e) => FieldKind::Enum(e.symbols.clone()),
                other => return Err(format!("field `{}`: unsupported type {other:?}", f.name)),
            };
            Ok(FieldSpec { name: f.name.clone(), kind, required })
        })
        .collect()
}

/// All canonical schemas, loaded once.
#[derive(Debug)]
pub struct Catalog {
    events: [Arc<EventSchema>; 4],
    pub violation: AvroSchema,
}

impl Catalog {
    /// The schemas compiled into the binary. They are checked by tests, so a
    /// failure here is a build defect.
    pub fn builtin() -> Result<Arc<Catalog>, String> {
        let load = |t| EventSchema::load(t).map(Arc::new);
        Ok(Arc::new(Catalog {
            events: [load(Topic::Change)?, load(Topic::Ci)?, load(Topic::Access)?, load(Topic::Deploy)?],
            violation: AvroSchema::parse_str(VIOLATION_AVSC).map_err(|e| format!("schemas/violation.avsc: {e}"))?,
        }))
    }

    pub fn event(&self, topic: Topic) -> &Arc<EventSchema> {
        &self.events[topic.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_schemas_load_with_event_time() {
        let catalog = Catalog::builtin().unwrap();
        for topic in Topic::ALL {
            let s = catalog.event(topic);
            assert_eq!(s.fields[s.time_index].name, "event_time");
            assert_eq!(s.arrow.fields().len(), s.fields.len() + 2);
        }
    }
}
