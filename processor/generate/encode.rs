//! Encoding generated events as they would arrive: JSON objects, or Avro in
//! the Confluent wire format with the ids of `schemas/ids.toml`.

use apache_avro::Schema as AvroSchema;
use serde_json::{Map, Value as Json};

use super::Event;
use crate::decode::{confluent_header, format_ms};
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

/// Confluent-framed Avro of an event, written straight from the fields (the
/// `Value` path cost ~11 µs an event, most of the benchmarks' set-up). Fails
/// when a value does not fit the schema (a generator bug).
pub fn to_avro(schema: &EventSchema, fields: &Map<String, Json>) -> Result<Vec<u8>, String> {
    let AvroSchema::Record(record) = &schema.avro else { return Err("not a record schema".into()) };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&confluent_header(schema_id(schema.topic)));
    for (spec, field) in schema.fields.iter().zip(&record.fields) {
        let json = fields.get(&spec.name).unwrap_or(&Json::Null);
        if let AvroSchema::Union(u) = &field.schema {
            let null_at = u.variants().iter().position(|s| *s == AvroSchema::Null).unwrap_or(0);
            let index = if json.is_null() { null_at } else { 1 - null_at.min(1) };
            put_long(&mut out, index as i64);
        }
        let fail = || format!("{}: {json} does not fit {:?}", spec.name, spec.kind);
        match (&spec.kind, json) {
            (_, Json::Null) if matches!(field.schema, AvroSchema::Union(_)) => {}
            (FieldKind::Str, Json::String(s)) => put_bytes(&mut out, s.as_bytes()),
            (FieldKind::Enum(symbols), Json::String(s)) => {
                let index = symbols.iter().position(|x| x == s).ok_or(format!("{}: unknown symbol {s}", spec.name))?;
                put_long(&mut out, index as i64);
            }
            (FieldKind::Long | FieldKind::Timestamp, Json::Number(n)) => {
                put_long(&mut out, n.as_i64().ok_or_else(fail)?)
            }
            (FieldKind::Int, Json::Number(n)) => {
                put_long(&mut out, n.as_i64().filter(|v| i32::try_from(*v).is_ok()).ok_or_else(fail)?)
            }
            (FieldKind::Bool, Json::Bool(b)) => out.push(u8::from(*b)),
            _ => return Err(fail()),
        }
    }
    Ok(out)
}

/// An Avro int or long: zig-zag, then seven bits a byte.
fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;

    use super::*;
    use crate::decode::confluent_frame;
    use crate::generate::{generate, GenConfig};

    /// The same event through apache-avro's `Value` encoder.
    fn via_value(schema: &EventSchema, fields: &Map<String, Json>) -> Vec<u8> {
        let AvroSchema::Record(record) = &schema.avro else { panic!("not a record") };
        let mut values = Vec::new();
        for (spec, field) in schema.fields.iter().zip(&record.fields) {
            let inner = match (&spec.kind, fields.get(&spec.name).unwrap_or(&Json::Null)) {
                (_, Json::Null) => Value::Null,
                (FieldKind::Str, Json::String(s)) => Value::String(s.clone()),
                (FieldKind::Enum(symbols), Json::String(s)) => {
                    Value::Enum(symbols.iter().position(|x| x == s).unwrap() as u32, s.clone())
                }
                (FieldKind::Long, Json::Number(n)) => Value::Long(n.as_i64().unwrap()),
                (FieldKind::Int, Json::Number(n)) => Value::Int(n.as_i64().unwrap() as i32),
                (FieldKind::Bool, Json::Bool(b)) => Value::Boolean(*b),
                (FieldKind::Timestamp, Json::Number(n)) => Value::TimestampMillis(n.as_i64().unwrap()),
                (kind, v) => panic!("{v} does not fit {kind:?}"),
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
        let datum = apache_avro::to_avro_datum(&schema.avro, Value::Record(values)).unwrap();
        confluent_frame(schema_id(schema.topic), &datum)
    }

    #[test]
    fn writes_what_apache_avro_writes() {
        let catalog = Catalog::builtin().unwrap();
        let (events, _) = generate(&GenConfig::new(5_000, 7, 1_795_000_000_000));
        for e in &events {
            let schema = catalog.event(e.topic);
            assert_eq!(to_avro(schema, &e.fields).unwrap(), via_value(schema, &e.fields), "{:?}", e.fields);
        }
    }

    #[test]
    fn a_value_that_does_not_fit_is_an_error() {
        let catalog = Catalog::builtin().unwrap();
        let schema = catalog.event(Topic::Deploy);
        let mut fields = Map::new();
        fields.insert("event_id".into(), Json::Bool(true));
        assert!(to_avro(schema, &fields).unwrap_err().starts_with("event_id:"));
        fields.insert("event_id".into(), Json::String("e".into()));
        // A required field left out.
        assert!(to_avro(schema, &fields).is_err());
    }
}
