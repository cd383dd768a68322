//! Avro datums straight into column values, without apache-avro's `Value`
//! tree.
//!
//! A [`Plan`] is compiled once per writer schema against the canonical
//! (reader) schema: for every writer field, how to read it and which
//! canonical column, if any, it fills. Reading a datum then costs a pass over
//! its bytes; strings are borrowed from the payload, not copied.
//!
//! The fast path only ever accepts what the `Value` path accepts: anything it
//! does not handle — a writer shape it does not compile (named references,
//! decimals, a field default other than null), a branch or symbol that does
//! not resolve, a null in a required field, bad or short input — makes it
//! give up on that datum, and the caller decodes it again the slow way, which
//! yields the row or the exact error.

use apache_avro::schema::RecordField;
use apache_avro::Schema as AvroSchema;

use super::input::Input;
use crate::schema::{EventSchema, FieldKind};

/// One decoded value, borrowing from the datum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Slot<'a> {
    Null,
    Str(&'a str),
    /// An enum column's value, by its index among the canonical symbols.
    Symbol(u32),
    Long(i64),
    Int(i32),
    Bool(bool),
}

/// How one writer value becomes a canonical column value.
#[derive(Debug)]
pub(super) enum Op {
    Null,
    Bool,
    Int,
    /// An int or long read into a long (or timestamp) column.
    Long {
        int: bool,
    },
    Str,
    /// Writer symbol index to the canonical symbol's index (None: does not
    /// resolve).
    Enum(Vec<Option<u32>>),
    Union(Vec<Op>),
    /// A value of this writer type cannot fill the column: give up.
    Incompatible,
}

/// How to step over a writer value nothing reads.
#[derive(Debug)]
pub(super) enum Skip {
    Nothing,
    Bool,
    Varint,
    Fixed(usize),
    Bytes,
    Array(Box<Skip>),
    Map(Box<Skip>),
    Record(Vec<Skip>),
    Union(Vec<Skip>),
}

#[derive(Debug)]
enum Step {
    Skip(Skip),
    Set { column: usize, op: Op },
}

/// A writer schema compiled against a canonical schema.
#[derive(Debug)]
pub(crate) struct Plan {
    steps: Vec<Step>,
    /// Canonical columns the writer lacks: null (the only default allowed).
    missing: Vec<usize>,
    columns: usize,
    required: Vec<bool>,
}

impl Plan {
    /// `None` when the writer schema has a shape the fast path leaves to
    /// apache-avro.
    pub(crate) fn compile(writer: &AvroSchema, reader: &EventSchema) -> Option<Plan> {
        let AvroSchema::Record(record) = writer else { return None };
        let AvroSchema::Record(canonical) = &reader.avro else { return None };
        if canonical.fields.iter().any(|f| f.aliases.as_ref().is_some_and(|a| !a.is_empty())) {
            return None;
        }
        let mut filled = vec![false; reader.fields.len()];
        let mut steps = Vec::with_capacity(record.fields.len());
        for field in &record.fields {
            match reader.fields.iter().position(|f| f.name == field.name) {
                Some(column) => {
                    filled[column] = true;
                    steps.push(Step::Set { column, op: op(&field.schema, &reader.fields[column].kind)? });
                }
                None => steps.push(Step::Skip(skip(&field.schema)?)),
            }
        }
        let mut missing = Vec::new();
        for (column, was) in filled.iter().enumerate() {
            if !was {
                // Only an optional field defaulting to null resolves here.
                let field: &RecordField = canonical.fields.iter().find(|f| f.name == reader.fields[column].name)?;
                if reader.fields[column].required || !matches!(field.default, Some(serde_json::Value::Null)) {
                    return None;
                }
                missing.push(column);
            }
        }
        let required = reader.fields.iter().map(|f| f.required).collect();
        Some(Plan { steps, missing, columns: reader.fields.len(), required })
    }

    /// Reads one datum into `row` (one slot per canonical column). `None`
    /// means "decode it the slow way".
    pub(crate) fn read<'a>(&self, datum: &'a [u8], row: &mut Vec<Slot<'a>>) -> Option<()> {
        row.clear();
        row.resize(self.columns, Slot::Null);
        let mut input = Input { rest: datum };
        for step in &self.steps {
            match step {
                Step::Skip(s) => input.skip(s)?,
                Step::Set { column, op } => row[*column] = input.value(op)?,
            }
        }
        if !input.rest.is_empty() {
            return None;
        }
        for column in &self.missing {
            row[*column] = Slot::Null;
        }
        for (slot, required) in row.iter().zip(&self.required) {
            if *required && *slot == Slot::Null {
                return None;
            }
        }
        Some(())
    }
}

fn op(writer: &AvroSchema, kind: &FieldKind) -> Option<Op> {
    Some(match (writer, kind) {
        (AvroSchema::Null, _) => Op::Null,
        (AvroSchema::Union(u), _) => Op::Union(u.variants().iter().map(|v| op(v, kind)).collect::<Option<_>>()?),
        (AvroSchema::String, FieldKind::Str) => Op::Str,
        (AvroSchema::Boolean, FieldKind::Bool) => Op::Bool,
        (AvroSchema::Int, FieldKind::Int) => Op::Int,
        (AvroSchema::Int, FieldKind::Long) => Op::Long { int: true },
        (AvroSchema::Long, FieldKind::Long | FieldKind::Timestamp) => Op::Long { int: false },
        (AvroSchema::TimestampMillis, FieldKind::Timestamp) => Op::Long { int: false },
        (AvroSchema::Enum(e), FieldKind::Enum(symbols)) => {
            Op::Enum(e.symbols.iter().map(|s| symbols.iter().position(|r| r == s).map(|i| i as u32)).collect())
        }
        _ => Op::Incompatible,
    })
}

fn skip(writer: &AvroSchema) -> Option<Skip> {
    Some(match writer {
        AvroSchema::Null => Skip::Nothing,
        AvroSchema::Boolean => Skip::Bool,
        AvroSchema::Int
        | AvroSchema::Long
        | AvroSchema::Enum(_)
        | AvroSchema::Date
        | AvroSchema::TimeMillis
        | AvroSchema::TimeMicros
        | AvroSchema::TimestampMillis
        | AvroSchema::TimestampMicros
        | AvroSchema::TimestampNanos
        | AvroSchema::LocalTimestampMillis
        | AvroSchema::LocalTimestampMicros
        | AvroSchema::LocalTimestampNanos => Skip::Varint,
        AvroSchema::Float => Skip::Fixed(4),
        AvroSchema::Double => Skip::Fixed(8),
        AvroSchema::Bytes | AvroSchema::String => Skip::Bytes,
        AvroSchema::Fixed(f) => Skip::Fixed(f.size),
        AvroSchema::Duration => Skip::Fixed(12),
        AvroSchema::Array(a) => Skip::Array(Box::new(skip(&a.items)?)),
        AvroSchema::Map(m) => Skip::Map(Box::new(skip(&m.types)?)),
        AvroSchema::Record(r) => Skip::Record(r.fields.iter().map(|f| skip(&f.schema)).collect::<Option<_>>()?),
        AvroSchema::Union(u) => Skip::Union(u.variants().iter().map(skip).collect::<Option<_>>()?),
        // Named references, decimals and uuids are left to apache-avro.
        _ => return None,
    })
}

/// Steps over one datum of a writer schema: how the datums packed in a
/// block of an Avro container file are told apart.
#[derive(Debug)]
pub(crate) struct Stepper(Skip);

impl Stepper {
    /// `None` for a shape the fast path leaves to apache-avro.
    pub(crate) fn compile(schema: &AvroSchema) -> Option<Stepper> {
        skip(schema).map(Stepper)
    }

    /// The length of the datum `bytes` starts with; `None` when it is cut
    /// short or malformed.
    pub(crate) fn len(&self, bytes: &[u8]) -> Option<usize> {
        let mut input = Input { rest: bytes };
        input.skip(&self.0)?;
        Some(bytes.len() - input.rest.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Catalog, Topic};

    /// Compares a fast read with the slow path's row, symbols resolved.
    fn same_row(schema: &EventSchema, fast: &[Slot<'_>], slow: &[super::super::Cell]) -> bool {
        fast.len() == slow.len()
            && fast.iter().zip(slow).zip(&schema.fields).all(|((fast, slow), spec)| {
                let fast = match (fast, &spec.kind) {
                    (Slot::Symbol(i), FieldKind::Enum(symbols)) => Slot::Str(&symbols[*i as usize]),
                    (other, _) => *other,
                };
                fast == slow.as_slot()
            })
    }

    #[test]
    fn mangled_datums_are_read_as_the_slow_path_reads_them_or_left_to_it() {
        let catalog = Catalog::builtin().unwrap();
        let (events, _) = crate::generate::generate(&crate::generate::GenConfig::new(500, 9, 1_790_000_000_000));
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut fast_reads, mut tries) = (0, 0);
        for e in &events {
            let schema = catalog.event(e.topic);
            let plan = Plan::compile(&schema.avro, schema).unwrap();
            let good = crate::generate::to_avro(schema, &e.fields).unwrap()[5..].to_vec();
            for _ in 0..40 {
                let mut datum = good.clone();
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % datum.len();
                    datum[at] = match next() % 3 {
                        0 => datum[at] ^ (1 << (next() % 8)),
                        1 => (next() % 4) as u8 * 2, // small varints: lengths, branches, symbols
                        _ => next() as u8,
                    };
                }
                let mut row = Vec::new();
                tries += 1;
                if plan.read(&datum, &mut row).is_some() {
                    fast_reads += 1;
                    let slow = super::super::avro::plain_row(schema, &datum)
                        .unwrap_or_else(|err| panic!("fast read a datum the slow path refuses ({err}): {datum:?}"));
                    assert!(same_row(schema, &row, &slow), "{datum:?}");
                }
            }
        }
        assert!(fast_reads > tries / 10, "the mangling left too few readable datums: {fast_reads}/{tries}");
    }

    #[test]
    fn canonical_schemas_compile_and_read_their_own_datums() {
        let catalog = Catalog::builtin().unwrap();
        let (events, _) = crate::generate::generate(&crate::generate::GenConfig::new(2_000, 3, 1_790_000_000_000));
        for topic in Topic::ALL {
            let schema = catalog.event(topic);
            let plan = Plan::compile(&schema.avro, schema).expect("canonical schema compiles");
            for e in events.iter().filter(|e| e.topic == topic) {
                let mut row = Vec::new();
                let datum = crate::generate::to_avro(schema, &e.fields).unwrap();
                plan.read(&datum[5..], &mut row).expect("a generated datum reads");
                let slow = super::super::avro::plain_row(schema, &datum[5..]).unwrap();
                assert!(same_row(schema, &row, &slow), "{topic}: {e:?}");
                // Every cut of the datum is refused, never misread.
                for cut in 0..datum.len() - 5 {
                    assert!(plan.read(&datum[5..5 + cut], &mut row).is_none(), "{topic}: cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn an_evolved_writer_schema_reads_as_apache_avro_resolves_it() {
        use apache_avro::types::Value;
        let catalog = Catalog::builtin().unwrap();
        let schema = catalog.event(Topic::Deploy);
        // Reordered, without the optional change_id, with extra fields of
        // every shape, the status enum reordered with one symbol more.
        let writer = AvroSchema::parse_str(
            r#"{"type": "record", "name": "DeployEvent", "namespace": "dev.vigil.events", "fields": [
              {"name": "status", "type": {"type": "enum", "name": "DeployStatus",
                "symbols": ["paused", "failed", "started", "succeeded", "rolled_back"]}},
              {"name": "tags", "type": {"type": "array", "items": "string"}},
              {"name": "automated", "type": "boolean"},
              {"name": "labels", "type": {"type": "map", "values": "long"}},
              {"name": "actor", "type": "string"},
              {"name": "meta", "type": {"type": "record", "name": "Meta", "fields": [
                {"name": "a", "type": "double"}, {"name": "b", "type": ["null", "float"]}]}},
              {"name": "artifact_digest", "type": ["null", "string"]},
              {"name": "commit_sha", "type": "string"},
              {"name": "h", "type": {"type": "fixed", "name": "H", "size": 4}},
              {"name": "environment", "type": "string"},
              {"name": "service", "type": "string"},
              {"name": "deploy_id", "type": "string"},
              {"name": "event_time", "type": "long"},
              {"name": "event_id", "type": "string"}
            ]}"#,
        )
        .unwrap();
        let plan = Plan::compile(&writer, schema).expect("the evolved writer compiles");
        let (mut fast_reads, mut slow_refusals) = (0, 0);
        for i in 0..200i64 {
            let status = ["paused", "failed", "started", "succeeded", "rolled_back"][(i % 5) as usize];
            let s = |v: &str| Value::String(v.to_string());
            let record = Value::Record(vec![
                ("status".into(), Value::Enum((i % 5) as u32, status.into())),
                ("tags".into(), Value::Array((0..i % 3).map(|k| s(&format!("t{k}"))).collect())),
                ("automated".into(), Value::Boolean(i % 2 == 0)),
                ("labels".into(), Value::Map((0..i % 4).map(|k| (format!("k{k}"), Value::Long(k * i))).collect())),
                ("actor".into(), s(&format!("actor-{i}"))),
                (
                    "meta".into(),
                    Value::Record(vec![
                        ("a".into(), Value::Double(i as f64 / 3.0)),
                        (
                            "b".into(),
                            if i % 2 == 0 {
                                Value::Union(0, Box::new(Value::Null))
                            } else {
                                Value::Union(1, Box::new(Value::Float(1.5)))
                            },
                        ),
                    ]),
                ),
                (
                    "artifact_digest".into(),
                    if i % 3 == 0 {
                        Value::Union(0, Box::new(Value::Null))
                    } else {
                        Value::Union(1, Box::new(s("sha256:ab")))
                    },
                ),
                ("commit_sha".into(), s("9f1c")),
                ("h".into(), Value::Fixed(4, vec![1, 2, 3, 4])),
                ("environment".into(), s("production")),
                ("service".into(), s("payments")),
                ("deploy_id".into(), s(&format!("d{i}"))),
                ("event_time".into(), Value::Long(1_790_000_000_000 + i)),
                ("event_id".into(), s(&format!("e{i}"))),
            ]);
            let datum = apache_avro::to_avro_datum(&writer, record).unwrap();
            let slow = super::super::avro::resolved_row(schema, &writer, &datum);
            let mut row = Vec::new();
            match (plan.read(&datum, &mut row), slow) {
                (Some(()), Ok(slow)) => {
                    fast_reads += 1;
                    assert!(same_row(schema, &row, &slow), "datum {i}");
                }
                (Some(()), Err(e)) => panic!("datum {i}: fast read what apache-avro refuses: {e}"),
                (None, Err(_)) => slow_refusals += 1,
                (None, Ok(_)) => {} // left to the slow path, which reads it
            }
        }
        // "paused" resolves to no canonical symbol: those are refused.
        assert_eq!((fast_reads, slow_refusals), (160, 40));
    }
}
