//! Canonical JSON objects read straight into column values, without a
//! `serde_json::Value` in between (a map node and an owned string per field,
//! then a copy of every string into its cell).
//!
//! This path only ever says yes or "not me": anything it does not accept —
//! a missing or null required field, a wrong type, an unknown symbol,
//! invalid JSON — goes to the `Value` path in `json.rs`, which decides and
//! words the error. So what it accepts must be exactly what that path reads
//! the same way: unknown keys ignored, the last of duplicate keys kept,
//! integers that fit, timestamps as epoch milliseconds or RFC 3339 text.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use super::fast::Slot;
use crate::schema::{EventSchema, FieldKind, FieldSpec};

/// What the reader does with a key that names no field.
#[derive(Clone, Copy, Debug)]
pub(super) enum Unknown {
    /// Skips its value, as the `Value` path ignores it.
    Skip,
    /// Declines the payload: under a detected format such a key most likely
    /// marks a tool's own payload, which the `Value` path maps.
    Decline,
}

/// One field's value as read (`Null` also when absent); strings borrow from
/// the payload unless they held escapes.
#[derive(Debug, PartialEq)]
pub(super) enum Val<'de> {
    Null,
    Str(Cow<'de, str>),
    Symbol(u32),
    Long(i64),
    Int(i32),
    Bool(bool),
}

impl Val<'_> {
    pub(super) fn slot(&self) -> Slot<'_> {
        match self {
            Val::Null => Slot::Null,
            Val::Str(s) => Slot::Str(s),
            Val::Symbol(i) => Slot::Symbol(*i),
            Val::Long(v) => Slot::Long(*v),
            Val::Int(v) => Slot::Int(*v),
            Val::Bool(v) => Slot::Bool(*v),
        }
    }
}

/// Reads `bytes`, a JSON object, into `vals` (one per schema field, in field
/// order). `None` when the `Value` path must judge it.
pub(super) fn row<'de>(
    schema: &EventSchema,
    bytes: &'de [u8],
    unknown: Unknown,
    vals: &mut Vec<Val<'de>>,
) -> Option<()> {
    vals.clear();
    vals.resize_with(schema.fields.len(), || Val::Null);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de::Deserializer::deserialize_map(&mut de, Object { fields: &schema.fields, unknown, vals }).ok()?;
    de.end().ok()?;
    let complete = schema.fields.iter().zip(vals.iter()).all(|(f, v)| !f.required || *v != Val::Null);
    complete.then_some(())
}

struct Object<'s, 'v, 'de> {
    fields: &'s [FieldSpec],
    unknown: Unknown,
    vals: &'v mut Vec<Val<'de>>,
}

impl<'de> Visitor<'de> for Object<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a canonical event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(at) = map.next_key_seed(Key(self.fields))? {
            match (at, self.unknown) {
                (Some(i), _) => self.vals[i] = map.next_value_seed(Field(&self.fields[i].kind))?,
                (None, Unknown::Skip) => {
                    map.next_value::<IgnoredAny>()?;
                }
                (None, Unknown::Decline) => return Err(de::Error::custom("a key that names no field")),
            }
        }
        Ok(())
    }
}

/// A key, as the index of the field it names (`None`: not a field).
struct Key<'s>(&'s [FieldSpec]);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Key<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|f| f.name == key))
    }
}

/// A field's value, checked against its kind.
struct Field<'s>(&'s FieldKind);

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = Val<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Val<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl Field<'_> {
    fn text<'de, E: de::Error>(self, s: Cow<'de, str>) -> Result<Val<'de>, E> {
        match self.0 {
            FieldKind::Str => Ok(Val::Str(s)),
            FieldKind::Enum(symbols) => match symbols.iter().position(|sym| *sym == s) {
                Some(i) => Ok(Val::Symbol(i as u32)),
                None => Err(E::custom("not a symbol")),
            },
            FieldKind::Timestamp => chrono::DateTime::parse_from_rfc3339(&s)
                .map(|t| Val::Long(t.timestamp_millis()))
                .map_err(|_| E::custom("not a timestamp")),
            _ => Err(E::custom("text where the field is not")),
        }
    }

    fn integer<'de, E: de::Error>(self, v: i64) -> Result<Val<'de>, E> {
        match self.0 {
            FieldKind::Long | FieldKind::Timestamp => Ok(Val::Long(v)),
            FieldKind::Int => i32::try_from(v).map(Val::Int).map_err(|_| E::custom("out of range")),
            _ => Err(E::custom("a number where the field is not")),
        }
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = Val<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value of the field's kind")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Val<'de>, E> {
        match self.0 {
            FieldKind::Bool => Ok(Val::Bool(v)),
            _ => Err(E::custom("a boolean where the field is not")),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val<'de>, E> {
        self.integer(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val<'de>, E> {
        self.integer(i64::try_from(v).map_err(|_| E::custom("out of range"))?)
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Val<'de>, E> {
        self.text(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Val<'de>, E> {
        self.text(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Val<'de>, E> {
        self.text(Cow::Owned(s))
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::schema::{Catalog, Topic};

    /// Reads `bytes` both ways: the direct path may decline, but what it
    /// reads must be what the `Value` path reads.
    fn agree(schema: &EventSchema, bytes: &[u8]) -> bool {
        let mut vals = Vec::new();
        let fast = row(schema, bytes, Unknown::Skip, &mut vals);
        let full = super::super::json::row(schema, bytes);
        match (fast, full) {
            (Some(()), Ok(cells)) => {
                let slots: Vec<Slot> = vals.iter().map(Val::slot).collect();
                for ((slot, cell), spec) in slots.iter().zip(&cells).zip(&schema.fields) {
                    match (slot, &spec.kind, cell.as_slot()) {
                        (Slot::Symbol(i), FieldKind::Enum(symbols), Slot::Str(s)) => {
                            assert_eq!(symbols[*i as usize], s, "{}", String::from_utf8_lossy(bytes))
                        }
                        (slot, _, cell) => assert_eq!(*slot, cell, "{}: {}", spec.name, String::from_utf8_lossy(bytes)),
                    }
                }
                true
            }
            (Some(()), Err(e)) => {
                panic!("read directly, rejected by the Value path ({e}): {}", String::from_utf8_lossy(bytes))
            }
            (None, _) => false,
        }
    }

    const DEPLOY: &str = r#"{"event_id":"e1","event_time":"2026-09-20T10:00:00Z","deploy_id":"d1","service":"payments","environment":"production","commit_sha":"abc","actor":"alice","automated":false,"status":"succeeded"}"#;

    #[test]
    fn edge_cases_read_as_the_value_path_reads_them_or_not_at_all() {
        let catalog = Catalog::builtin().unwrap();
        let deploy = catalog.event(Topic::Deploy);
        let with = |extra: &str| DEPLOY.replacen('{', &format!("{{{extra},"), 1);
        let read = [
            DEPLOY.to_string(),
            with(r#""unknown":{"deep":[1,{"x":null}]}"#),
            with(r#""deploy_id":"first""#), // the later key wins, as in a Value
            with(r#""actor":"al\u0069ce \"q\"""#),
            with(r#""event\u005fid":"escaped-key""#),
            with(r#""event_time":1790000000123"#).replace(r#","event_time":"2026-09-20T10:00:00Z""#, ""),
            with(r#""change_id":null"#),
            format!("  {DEPLOY}\n"),
        ];
        for text in &read {
            assert!(agree(deploy, text.as_bytes()), "declined: {text}");
        }
        let declined = [
            with(r#""status":"exploded""#).replace(r#","status":"succeeded""#, ""),
            DEPLOY.replace(r#""automated":false"#, r#""automated":"no""#),
            DEPLOY.replace(r#""commit_sha":"abc""#, r#""commit_sha":null"#),
            DEPLOY.replace(r#""event_time":"2026-09-20T10:00:00Z""#, r#""event_time":1.5e12"#),
            DEPLOY.replace(r#""event_time":"2026-09-20T10:00:00Z""#, r#""event_time":18446744073709551615"#),
            DEPLOY.replace(r#""event_time":"2026-09-20T10:00:00Z""#, r#""event_time":"yesterday""#),
            DEPLOY.replace(r#""actor":"alice""#, r#""actor":["alice"]"#),
            format!("{DEPLOY} trailing"),
            format!("[{DEPLOY}]"),
            DEPLOY[..DEPLOY.len() - 1].to_string(),
            // Read by the Value path (the last value is good), declined here.
            with(r#""automated":"first""#),
        ];
        for text in &declined {
            assert!(!agree(deploy, text.as_bytes()), "read: {text}");
        }
    }

    #[test]
    fn a_detected_payload_is_declined_at_its_first_unknown_key() {
        let catalog = Catalog::builtin().unwrap();
        let deploy = catalog.event(Topic::Deploy);
        let mut vals = Vec::new();
        assert!(row(deploy, DEPLOY.as_bytes(), Unknown::Decline, &mut vals).is_some());
        let extra = DEPLOY.replacen('{', r#"{"repository":{"full_name":"acme/payments"},"#, 1);
        assert!(row(deploy, extra.as_bytes(), Unknown::Skip, &mut vals).is_some());
        assert!(row(deploy, extra.as_bytes(), Unknown::Decline, &mut vals).is_none());
    }

    /// What lets a detected-format payload take this path: one it reads
    /// has both fields, and `native::detect` calls such a payload canonical.
    #[test]
    fn every_canonical_schema_requires_event_id_and_event_time() {
        let catalog = Catalog::builtin().unwrap();
        for topic in Topic::ALL {
            for name in ["event_id", "event_time"] {
                let field = catalog.event(topic).fields.iter().find(|f| f.name == name);
                assert!(field.is_some_and(|f| f.required), "{topic}: {name}");
            }
        }
    }

    #[test]
    fn generated_events_and_their_mutations_read_as_the_value_path_reads_them() {
        let catalog = Catalog::builtin().unwrap();
        let (events, _) = crate::generate::generate(&crate::generate::GenConfig::new(2_000, 5, 1_790_000_000_000));
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let replacements =
            ["null", "1", "-7", "2147483648", "true", "\"\"", "\"x\\n\"", "1e3", "[]", "{}", "\"succeeded\""];
        let (mut read, mut declined) = (0, 0);
        for e in &events {
            let schema = catalog.event(e.topic);
            let good = crate::generate::to_json(schema, &e.fields);
            assert!(agree(schema, &good), "a generated event is declined: {}", String::from_utf8_lossy(&good));
            let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&good).unwrap();
            let field = &schema.fields[rng.random_range(0..schema.fields.len())].name;
            let with = replacements[rng.random_range(0..replacements.len())];
            object.insert(field.clone(), serde_json::from_str(with).unwrap());
            if agree(schema, &serde_json::to_vec(&object).unwrap()) {
                read += 1;
            } else {
                declined += 1;
            }
        }
        assert!(read > 100 && declined > 100, "mutations read {read}, declined {declined}");
    }
}
