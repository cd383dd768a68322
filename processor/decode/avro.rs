//! Avro datums to rows, and the writer-schema resolver for the Confluent wire
//! format.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use apache_avro::types::Value;
use apache_avro::Schema as AvroSchema;

use super::{Cell, DecodeError};
use crate::schema::{fingerprint, EventSchema, FieldKind, IDS_TOML};

/// The Confluent wire format's header: magic byte 0, then the schema id.
pub fn confluent_header(schema_id: u32) -> [u8; 5] {
    let [a, b, c, d] = schema_id.to_be_bytes();
    [0, a, b, c, d]
}

/// Frames an Avro datum in the Confluent wire format.
pub fn confluent_frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(datum.len() + 5);
    out.extend_from_slice(&confluent_header(schema_id));
    out.extend_from_slice(datum);
    out
}

/// Finds writer schemas by id: first the local table (`schemas/ids.toml`,
/// compiled in, plus any configured directory), then a schema registry's
/// `GET /schemas/ids/{id}`. Answers are cached, misses included, so an unknown
/// id costs one registry round trip.
pub struct SchemaResolver {
    local: HashMap<u32, Arc<WriterSchema>>,
    registry: Option<String>,
    cache: Mutex<HashMap<u32, Result<Arc<WriterSchema>, DecodeError>>>,
}

/// A writer schema and its fingerprint.
pub struct WriterSchema {
    pub schema: AvroSchema,
    pub fingerprint: [u8; 32],
}

impl WriterSchema {
    fn new(schema: AvroSchema) -> Arc<WriterSchema> {
        Arc::new(WriterSchema { fingerprint: fingerprint(&schema), schema })
    }
}

impl SchemaResolver {
    /// The compiled-in ids, plus `ids.toml` of `dir` when given, plus a
    /// registry URL when given.
    pub fn new(dir: Option<&Path>, registry: Option<String>) -> Result<SchemaResolver, String> {
        let mut local = HashMap::new();
        load_ids(IDS_TOML, "schemas/ids.toml", builtin_avsc, &mut local)?;
        if let Some(dir) = dir {
            let ids_path = dir.join("ids.toml");
            let text = std::fs::read_to_string(&ids_path)
                .map_err(|e| format!("{}: {e}; a schema directory needs an ids.toml", ids_path.display()))?;
            let read = |file: &str| {
                let path = dir.join(file);
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
            };
            load_ids(&text, &ids_path.display().to_string(), read, &mut local)?;
        }
        let registry = registry.map(|u| u.trim_end_matches('/').to_string());
        Ok(SchemaResolver { local, registry, cache: Mutex::new(HashMap::new()) })
    }

    pub fn resolve(&self, id: u32) -> Result<Arc<WriterSchema>, DecodeError> {
        if let Some(s) = self.local.get(&id) {
            return Ok(s.clone());
        }
        let Some(url) = &self.registry else {
            return Err(DecodeError::UnknownSchemaId(id));
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.entry(id).or_insert_with(|| fetch(url, id)).clone()
    }
}

fn builtin_avsc(file: &str) -> Result<String, String> {
    let text = match file {
        "change.avsc" => include_str!("../../schemas/change.avsc"),
        "ci.avsc" => include_str!("../../schemas/ci.avsc"),
        "access.avsc" => include_str!("../../schemas/access.avsc"),
        "deploy.avsc" => include_str!("../../schemas/deploy.avsc"),
        "violation.avsc" => include_str!("../../schemas/violation.avsc"),
        other => return Err(format!("schemas/{other} is not a built-in schema")),
    };
    Ok(text.to_string())
}

fn load_ids(
    toml_text: &str,
    origin: &str,
    read: impl Fn(&str) -> Result<String, String>,
    into: &mut HashMap<u32, Arc<WriterSchema>>,
) -> Result<(), String> {
    let table: HashMap<String, String> = toml::from_str(toml_text).map_err(|e| format!("{origin}: {e}"))?;
    for (id, file) in table {
        let id: u32 = id.parse().map_err(|_| format!("{origin}: key `{id}` is not a schema id (a whole number)"))?;
        let schema = AvroSchema::parse_str(&read(&file)?).map_err(|e| format!("{origin}: {file}: {e}"))?;
        into.insert(id, WriterSchema::new(schema));
    }
    Ok(())
}

fn fetch(url: &str, id: u32) -> Result<Arc<WriterSchema>, DecodeError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        schema: String,
    }
    let bad = |reason: String| DecodeError::BadWriterSchema { id, reason };
    let response = ureq::get(&format!("{url}/schemas/ids/{id}")).call();
    let mut response = match response {
        Ok(r) => r,
        Err(ureq::Error::StatusCode(404)) => return Err(DecodeError::UnknownSchemaId(id)),
        Err(e) => return Err(bad(format!("schema registry {url} did not answer: {e}"))),
    };
    let answer: Answer = response
        .body_mut()
        .read_json()
        .map_err(|e| bad(format!("schema registry {url} sent an unreadable answer: {e}")))?;
    AvroSchema::parse_str(&answer.schema)
        .map(WriterSchema::new)
        .map_err(|e| bad(format!("registry schema does not parse: {e}")))
}

/// Reads a Confluent-framed datum with its writer schema, resolved to the
/// canonical schema.
pub(super) fn confluent_row(
    schema: &EventSchema,
    resolver: &SchemaResolver,
    bytes: &[u8],
) -> Result<Vec<Cell>, DecodeError> {
    if bytes.len() < 5 {
        return Err(DecodeError::ShortHeader(bytes.len()));
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let writer = resolver.resolve(id)?;
    datum_row(schema, &writer.schema, writer.fingerprint, &bytes[5..])
}

/// Reads a bare datum written with the canonical schema.
pub(super) fn plain_row(schema: &EventSchema, bytes: &[u8]) -> Result<Vec<Cell>, DecodeError> {
    datum_row(schema, &schema.avro, schema.fingerprint, bytes)
}

/// Reads a bare datum written with `writer`, resolved to the canonical schema.
#[cfg(test)]
pub(super) fn resolved_row(schema: &EventSchema, writer: &AvroSchema, datum: &[u8]) -> Result<Vec<Cell>, DecodeError> {
    datum_row(schema, writer, fingerprint(writer), datum)
}

/// A reader that remembers whether anyone tried to read past its end.
/// apache-avro decodes a union whose index is cut off by the end of input as
/// null, so a datum truncated at a union would otherwise pass as valid.
struct EofWatch<'a> {
    rest: &'a [u8],
    hit_end: bool,
}

impl std::io::Read for EofWatch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !buf.is_empty() && self.rest.is_empty() {
            self.hit_end = true;
        }
        self.rest.read(buf)
    }
}

fn datum_row(
    schema: &EventSchema,
    writer: &AvroSchema,
    writer_fingerprint: [u8; 32],
    datum: &[u8],
) -> Result<Vec<Cell>, DecodeError> {
    let reader = (writer_fingerprint != schema.fingerprint).then_some(&schema.avro);
    let mut input = EofWatch { rest: datum, hit_end: false };
    let value =
        apache_avro::from_avro_datum(writer, &mut input, reader).map_err(|e| DecodeError::Avro(e.to_string()))?;
    if input.hit_end {
        return Err(DecodeError::Avro("the datum ends early".into()));
    }
    if !input.rest.is_empty() {
        return Err(DecodeError::TrailingBytes(input.rest.len()));
    }
    let Value::Record(fields) = value else {
        return Err(DecodeError::Avro("the datum is not a record".into()));
    };
    schema
        .fields
        .iter()
        .zip(fields)
        .map(|(spec, (_, value))| {
            let value = match value {
                Value::Union(_, inner) => *inner,
                v => v,
            };
            let cell = match (&spec.kind, value) {
                (_, Value::Null) if spec.required => return Err(DecodeError::Missing { field: spec.name.clone() }),
                (_, Value::Null) => Cell::Null,
                (FieldKind::Str, Value::String(s)) => Cell::Str(s),
                (FieldKind::Enum(_), Value::Enum(_, s)) => Cell::Str(s),
                (FieldKind::Long, Value::Long(v)) => Cell::Long(v),
                (FieldKind::Long, Value::Int(v)) => Cell::Long(v.into()),
                (FieldKind::Int, Value::Int(v)) => Cell::Int(v),
                (FieldKind::Bool, Value::Boolean(b)) => Cell::Bool(b),
                (FieldKind::Timestamp, Value::TimestampMillis(v) | Value::Long(v)) => Cell::Long(v),
                (kind, other) => {
                    return Err(DecodeError::WrongType {
                        field: spec.name.clone(),
                        expected: kind.describe(),
                        found: format!("{other:?}"),
                    })
                }
            };
            Ok(cell)
        })
        .collect()
}
