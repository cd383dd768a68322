//! Encoding generated events as they would arrive: JSON objects, or Avro in
//! the Confluent wire format with the ids of `schemas/ids.toml`.

use apache_avro::types::Value;
use apache_avro::Schema as AvroSchema;
use serde_json::{Map, Value as Json};

use super::Event;
use crate::decode::{confluent_frame, format_ms};
use crate::embedded::Record;
use crate::schema::{Catalog, EventSchema, FieldKind, Topic};

/// Payload encodings the generator can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Json,
    Avro,
}

/// Schema id of each topic's canonical schema in `schemas/ids.toml`.
pub fn schema_id(topic: Topic) -> u32 {
    match topic {
        Topic::Change => 1,
        Topic::Ci => 2,
        Topic::Access => 3,
        Topic::Deploy => 4,
    }
}

/// Kafka records for a generated stream, in `encoding`, to the topics named
/// per logical topic in `topics`.
pub fn records(
    catalog: &Catalog,
    events: &[Event],
    encoding: Encoding,
    topics: &[String; 4],
) -> Result<Vec<Record>, String> {
    events
        .iter()
        .map(|e| {
            let schema = catalog.event(e.topic);
            let payload = match encoding {
                Encoding::Json => to_json(schema, &e.fields),
                Encoding::Avro => to_avro(schema, &e.fields)?,
            };
            Ok(Record { topic: topics[e.topic.index()].clone(), key: e.key.clone(), payload, headers: Vec::new() })
        })
        .collect()
}

/// JSON text of an event; timestamps as RFC 3339.
pub fn to_json(schema: &EventSchema, fields: &Map<String, Json>) -> Vec<u8> {
    let mut out = Map::new();
    for spec in &schema.fields {
        let Some(v) = fields.get(&spec.name) else { continue };
        let v = match (&spec.kind, v) {
            (FieldKind::Timestamp, Json::Number(n)) => n.as_i64().map_or(v.clone(), |ms| Json::String(format_ms(ms))),
            _ => v.clone(),
        };
        out.insert(spec.name.clone(), v);
    }
    serde_json::to_vec(&Json::Object(out)).unwrap_or_default()
}

/// Confluent-framed Avro of an event. Fails when a value does not fit the
/// schema (a generator bug).
pub fn to_avro(schema: &EventSchema, fields: &Map<String, Json>) -> Result<Vec<u8>, String> {
    let AvroSchema::Record(record) = &schema.avro else { return Err("not a record schema".into()) };
    let mut values = Vec::with_capacity(record.fields.len());
    for (spec, field) in schema.fields.iter().zip(&record.fields) {
        let json = fields.get(&spec.name).unwrap_or(&Json::Null);
        let inner = match (&spec.kind, json) {
            (_, Json::Null) => Value::Null,
            (FieldKind::Str, Json::String(s)) => Value::String(s.clone()),
            (FieldKind::Enum(symbols), Json::String(s)) => {
                let index = symbols.iter().position(|x| x == s).ok_or(format!("{}: unknown symbol {s}", spec.name))?;
                Value::Enum(index as u32, s.clone())
            }
            (FieldKind::Long, Json::Number(n)) => Value::Long(n.as_i64().ok_or("not an integer")?),
            (FieldKind::Int, Json::Number(n)) => {
                Value::Int(n.as_i64().and_then(|v| i32::try_from(v).ok()).ok_or("not an int")?)
            }
            (FieldKind::Bool, Json::Bool(b)) => Value::Boolean(*b),
            (FieldKind::Timestamp, Json::Number(n)) => Value::TimestampMillis(n.as_i64().ok_or("not a timestamp")?),
            (kind, v) => return Err(format!("{}: {v} does not fit {kind:?}", spec.name)),
        };
        let value = match &field.schema {
            AvroSchema::Union(u) => {
                let null_at = u.variants().iter().position(|s| *s == AvroSchema::Null).unwrap_or(0);
                let index = if inner == Value::Null { null_at } else { 1 - null_at.min(1) };
                Value::Union(index as u32, Box::new(inner))
            }
            _ => inner,
        };
        values.push((spec.name.clone(), value));
    }
    let datum = apache_avro::to_avro_datum(&schema.avro, Value::Record(values)).map_err(|e| e.to_string())?;
    Ok(confluent_frame(schema_id(schema.topic), &datum))
}
