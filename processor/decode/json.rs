//! JSON objects to rows. Unknown keys are ignored (producers may add fields);
//! missing or null required fields, wrong types and unknown enum symbols are
//! errors naming the field.

use serde_json::Value;

use super::{Cell, DecodeError};
use crate::schema::{EventSchema, FieldKind};

pub(super) fn row(schema: &EventSchema, bytes: &[u8]) -> Result<Vec<Cell>, DecodeError> {
    value_row(schema, &parse(bytes)?)
}

pub(super) fn parse(bytes: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))
}

/// The row of a parsed JSON value, which must be an object.
pub(super) fn value_row(schema: &EventSchema, value: &Value) -> Result<Vec<Cell>, DecodeError> {
    let Value::Object(object) = value else {
        return Err(DecodeError::NotAnObject(type_name(value)));
    };
    object_row(schema, object)
}

/// The row of an already parsed object (what the native mappers produce).
pub(super) fn object_row(
    schema: &EventSchema,
    object: &serde_json::Map<String, Value>,
) -> Result<Vec<Cell>, DecodeError> {
    schema
        .fields
        .iter()
        .map(|spec| {
            let wrong = |v: &Value| DecodeError::WrongType {
                field: spec.name.clone(),
                expected: spec.kind.describe(),
                found: describe(v),
            };
            match object.get(&spec.name) {
                None | Some(Value::Null) if spec.required => Err(DecodeError::Missing { field: spec.name.clone() }),
                None | Some(Value::Null) => Ok(Cell::Null),
                Some(v) => match (&spec.kind, v) {
                    (FieldKind::Str, Value::String(s)) => Ok(Cell::Str(s.clone())),
                    (FieldKind::Enum(symbols), Value::String(s)) => {
                        if symbols.iter().any(|sym| sym == s) {
                            Ok(Cell::Str(s.clone()))
                        } else {
                            Err(DecodeError::UnknownSymbol {
                                field: spec.name.clone(),
                                value: s.clone(),
                                allowed: symbols.join(", "),
                            })
                        }
                    }
                    (FieldKind::Long, Value::Number(n)) => n.as_i64().map(Cell::Long).ok_or_else(|| wrong(v)),
                    (FieldKind::Int, Value::Number(n)) => {
                        n.as_i64().and_then(|n| i32::try_from(n).ok()).map(Cell::Int).ok_or_else(|| wrong(v))
                    }
                    (FieldKind::Bool, Value::Bool(b)) => Ok(Cell::Bool(*b)),
                    (FieldKind::Timestamp, Value::Number(n)) => n.as_i64().map(Cell::Long).ok_or_else(|| wrong(v)),
                    (FieldKind::Timestamp, Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
                        .map(|t| Cell::Long(t.timestamp_millis()))
                        .map_err(|_| wrong(v)),
                    _ => Err(wrong(v)),
                },
            }
        })
        .collect()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The value's type and, briefly, the value itself.
fn describe(v: &Value) -> String {
    let mut text = v.to_string();
    if text.len() > 40 {
        let cut = (0..=40).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    format!("{} {text}", type_name(v))
}
