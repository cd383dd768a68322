//! Rows of a topic's state by the value of a key — one column (change_id,
//! commit_sha, …) or several (the principal a name resolves to through the
//! identity map, and the environment) — so a control reads the rows its due
//! triggers name instead of everything retained.
//!
//! Every appended row gets an id (a counter per topic); the index keeps, per
//! value hash, the newest row id and how many rows have it (which lets a
//! lookup weigh a key before reading it), and per row id the previous row
//! id with the same hash — about 4 bytes per row plus one map entry per
//! distinct value. The links of evicted rows are cut once they are a
//! quarter of all; their values stay in the map until the owner renumbers
//! and rebuilds. Hash collisions are resolved by comparing the values
//! themselves.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, DictionaryArray, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::Int16Type;

use crate::identity::Identities;

const NONE: u32 = u32::MAX;

/// What a key is made of: columns of a topic (positions in its schema),
/// each compared as is or as the principal it names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeySpec(pub Vec<KeyPart>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPart {
    pub column: usize,
    pub principal: bool,
}

impl KeySpec {
    /// The key's columns of `batch`, in part order.
    pub fn columns<'a>(&self, batch: &'a RecordBatch) -> Vec<&'a ArrayRef> {
        self.0.iter().map(|p| batch.column(p.column)).collect()
    }

    /// The key's columns of `batch`, typed for reading keys row by row.
    pub fn key_columns<'a>(&self, batch: &'a RecordBatch) -> KeyColumns<'a> {
        KeyColumns::of(&self.columns(batch))
    }
}

/// One part of a key's value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Atom {
    Text(String),
    Int(i64),
}

/// A key column's value at one row, borrowed.
enum AtomRef<'a> {
    Text(&'a str),
    Int(i64),
}

/// A key column, its array's type found once rather than at every row.
#[derive(Clone, Copy)]
enum Typed<'a> {
    Text(&'a StringArray),
    Long(&'a Int64Array),
    Int(&'a Int32Array),
    /// Enum fields: one symbols array shared by every batch.
    Symbol(&'a Int16Array, &'a StringArray),
    /// No key value can be read from it.
    Other,
}

impl<'a> Typed<'a> {
    fn of(column: &'a ArrayRef) -> Typed<'a> {
        let any = column.as_any();
        if let Some(a) = any.downcast_ref::<StringArray>() {
            return Typed::Text(a);
        }
        if let Some(a) = any.downcast_ref::<Int64Array>() {
            return Typed::Long(a);
        }
        if let Some(a) = any.downcast_ref::<DictionaryArray<Int16Type>>() {
            if let Some(symbols) = a.values().as_any().downcast_ref::<StringArray>() {
                return Typed::Symbol(a.keys(), symbols);
            }
        }
        any.downcast_ref::<Int32Array>().map_or(Typed::Other, Typed::Int)
    }

    fn at(self, row: usize) -> Option<AtomRef<'a>> {
        match self {
            Typed::Text(a) => a.is_valid(row).then(|| AtomRef::Text(a.value(row))),
            Typed::Long(a) => a.is_valid(row).then(|| AtomRef::Int(a.value(row))),
            Typed::Int(a) => a.is_valid(row).then(|| AtomRef::Int(a.value(row).into())),
            Typed::Symbol(keys, symbols) => {
                keys.is_valid(row).then(|| AtomRef::Text(symbols.value(keys.value(row) as usize)))
            }
            Typed::Other => None,
        }
    }
}

/// A key's columns of one batch, in part order, and the batch's rows.
pub struct KeyColumns<'a> {
    parts: Vec<Typed<'a>>,
    rows: usize,
}

impl<'a> KeyColumns<'a> {
    pub fn of(columns: &[&'a ArrayRef]) -> KeyColumns<'a> {
        KeyColumns {
            parts: columns.iter().map(|c| Typed::of(c)).collect(),
            rows: columns.first().map_or(0, |c| c.len()),
        }
    }
}

/// Reads keys of one spec from rows: each part as is, or resolved to its
/// principal.
#[derive(Clone, Debug)]
pub struct KeyReader {
    principal: Vec<bool>,
    identities: Arc<Identities>,
}

impl KeyReader {
    pub fn new(spec: &KeySpec, identities: Arc<Identities>) -> KeyReader {
        KeyReader { principal: spec.0.iter().map(|p| p.principal).collect(), identities }
    }

    /// The key's hash at `row` of `columns`; `None` when a part is null (a
    /// null equals nothing) or of an unsupported type.
    fn hash(&self, columns: &KeyColumns<'_>, row: usize) -> Option<u64> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (column, principal) in columns.parts.iter().zip(&self.principal) {
            let part = match column.at(row)? {
                AtomRef::Text(t) if *principal => hash_bytes(self.identities.principal(t).as_bytes()),
                AtomRef::Text(t) => hash_bytes(t.as_bytes()),
                AtomRef::Int(i) => hash_bytes(&i.to_le_bytes()),
            };
            h = (h ^ part).wrapping_mul(0x0100_0000_01b3);
        }
        Some(h)
    }

    /// Whether the key at `row` is `value` (resolving only principals).
    fn equals(&self, columns: &KeyColumns<'_>, row: usize, value: &[Atom]) -> bool {
        columns.parts.iter().zip(&self.principal).zip(value).all(|((column, principal), want)| {
            match (column.at(row), want) {
                (Some(AtomRef::Text(t)), Atom::Text(w)) if *principal => self.identities.principal(t) == w.as_str(),
                (Some(AtomRef::Text(t)), Atom::Text(w)) => t == w,
                (Some(AtomRef::Int(i)), Atom::Int(w)) => i == *w,
                _ => false,
            }
        })
    }

    /// The key's value at `row`, principals resolved.
    fn value(&self, columns: &KeyColumns<'_>, row: usize) -> Option<Vec<Atom>> {
        columns
            .parts
            .iter()
            .zip(&self.principal)
            .map(|(column, principal)| {
                Some(match column.at(row)? {
                    AtomRef::Text(t) if *principal => Atom::Text(self.identities.principal(t).into_owned()),
                    AtomRef::Text(t) => Atom::Text(t.to_string()),
                    AtomRef::Int(i) => Atom::Int(i),
                })
            })
            .collect()
    }
}

/// The distinct keys a lookup wants, by hash.
pub struct Wanted {
    reader: KeyReader,
    values: HashMap<u64, Vec<Vec<Atom>>, BuildHasherDefault<IdentityHasher>>,
}

impl Wanted {
    /// The distinct keys (none with a null part) of the rows of `batches`,
    /// each given as its key columns in part order.
    pub fn of(reader: &KeyReader, batches: &[Vec<&ArrayRef>]) -> Wanted {
        let mut unlimited = usize::MAX;
        Wanted::within(reader, batches, |_| 0, &mut unlimited).unwrap_or_else(|| Wanted::empty(reader))
    }

    /// As [`Wanted::of`], spending each distinct key's `weight` from
    /// `budget`; gives up (`None`) as soon as the budget is spent, so a
    /// lookup that would read a large share of a table stops without reading
    /// every due row's key.
    pub fn within(
        reader: &KeyReader,
        batches: &[Vec<&ArrayRef>],
        weight: impl Fn(u64) -> usize,
        budget: &mut usize,
    ) -> Option<Wanted> {
        // Hashes alone first, building no key: a lookup that wants too much
        // of the table gives up here at the cost of a hash per row. The
        // budget is spent once per distinct hash, as the index counts rows.
        let mut wanted = Wanted::empty(reader);
        let mut hashes: Vec<Vec<Option<u64>>> = Vec::with_capacity(batches.len());
        let typed: Vec<KeyColumns<'_>> = batches.iter().map(|columns| KeyColumns::of(columns)).collect();
        for columns in &typed {
            let rows = columns.rows;
            let mut of_batch = Vec::with_capacity(rows);
            for row in 0..rows {
                let h = reader.hash(columns, row);
                if let Some(h) = h {
                    if let std::collections::hash_map::Entry::Vacant(slot) = wanted.values.entry(h) {
                        slot.insert(Vec::new());
                        *budget = budget.checked_sub(weight(h)).filter(|left| *left > 0)?;
                    }
                }
                of_batch.push(h);
            }
            hashes.push(of_batch);
        }
        // Then each distinct key's value, under the hash it was seen with.
        for (columns, hashes) in typed.iter().zip(hashes) {
            for (row, h) in hashes.into_iter().enumerate() {
                let Some(values) = h.and_then(|h| wanted.values.get_mut(&h)) else { continue };
                if !values.iter().any(|v| reader.equals(columns, row, v)) {
                    values.extend(reader.value(columns, row));
                }
            }
        }
        Some(wanted)
    }

    fn empty(reader: &KeyReader) -> Wanted {
        Wanted { reader: reader.clone(), values: HashMap::default() }
    }

    /// Distinct hashes wanted.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.values.keys().copied()
    }

    /// Whether the key at `row` of `columns` is wanted.
    pub fn holds(&self, columns: &KeyColumns<'_>, row: usize) -> bool {
        self.reader.hash(columns, row).is_some_and(|h| self.matches(h, columns, row))
    }

    /// Whether the key at `row` of `columns`, of hash `hash`, is wanted
    /// (chains are per hash; this resolves collisions).
    pub fn matches(&self, hash: u64, columns: &KeyColumns<'_>, row: usize) -> bool {
        let Some(values) = self.values.get(&hash) else { return false };
        values.iter().any(|v| self.reader.equals(columns, row, v))
    }
}

/// A key part's hash: foldhash with a fixed seed (the index and the
/// lookups must agree; nothing outside the process sees it). FNV-1a, a
/// byte at a time, took several times as long on 40-character commits.
fn hash_bytes(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x5d1e_c0de).hash_one(bytes)
}

/// The map's keys are hashes already.
#[derive(Default)]
pub struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub struct KeyIndex {
    pub spec: KeySpec,
    reader: KeyReader,
    /// Per hash: the newest row id, and how many rows have it (evicted ones
    /// included until a rebuild).
    heads: HashMap<u64, (u32, u32), BuildHasherDefault<IdentityHasher>>,
    /// Row id (minus `base`) → previous row id with the same hash.
    next: Vec<u32>,
    base: u32,
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyIndex({:?}, {} values, {} rows)", self.spec, self.heads.len(), self.next.len())
    }
}

impl KeyIndex {
    pub fn new(spec: KeySpec, identities: Arc<Identities>, base: u32) -> KeyIndex {
        let reader = KeyReader::new(&spec, identities);
        KeyIndex { spec, reader, heads: HashMap::default(), next: Vec::new(), base }
    }

    /// The same key, nothing indexed yet, row ids from 0.
    pub fn emptied(&self) -> KeyIndex {
        KeyIndex::new(self.spec.clone(), self.reader.identities.clone(), 0)
    }

    /// How this index reads keys (for the values a lookup wants).
    pub fn reader(&self) -> &KeyReader {
        &self.reader
    }

    /// Indexes a batch whose first row has id `first`.
    pub fn add(&mut self, batch: &RecordBatch, first: u32) {
        debug_assert_eq!(first, self.base + self.next.len() as u32);
        let columns = self.spec.key_columns(batch);
        // Grown by a quarter, not doubled: this is most of an index's bytes.
        if self.next.capacity() - self.next.len() < batch.num_rows() {
            self.next.reserve_exact(batch.num_rows().max(self.next.len() / 4));
        }
        for row in 0..batch.num_rows() {
            let id = first + row as u32;
            let previous = match self.reader.hash(&columns, row) {
                // Not `entry`: it reserves room even for a key present, and
                // so doubles a full map a value early.
                Some(h) => match self.heads.get_mut(&h) {
                    Some(head) => std::mem::replace(head, (id, head.1 + 1)).0,
                    None => {
                        self.heads.insert(h, (id, 1));
                        NONE
                    }
                },
                None => NONE,
            };
            self.next.push(previous);
        }
    }

    /// Forgets the chain links of the rows below id `first` (all evicted):
    /// such ids end every chain from now on. Done once they are a quarter
    /// of the links, as it copies the rest.
    pub fn forget_before(&mut self, first: u32) {
        let gone = (first.saturating_sub(self.base) as usize).min(self.next.len());
        if gone == 0 || gone * 4 < self.next.len() {
            return;
        }
        self.next = self.next[gone..].to_vec();
        self.base += gone as u32;
    }

    /// Row ids (newest first) whose key hashes like `hash`; some may be
    /// evicted or collide, the caller checks.
    pub fn candidates(&self, hash: u64, out: &mut Vec<u32>) {
        let mut id = self.heads.get(&hash).map_or(NONE, |h| h.0);
        while id != NONE && id >= self.base {
            out.push(id);
            id = self.next[(id - self.base) as usize];
        }
    }

    /// Rows whose key hashes like `hash`, at most (evicted ones included
    /// until a rebuild).
    pub fn count(&self, hash: u64) -> usize {
        self.heads.get(&hash).map_or(0, |h| h.1 as usize)
    }

    /// Bytes held, roughly.
    pub fn bytes(&self) -> usize {
        self.next.capacity() * 4 + self.heads.capacity() * 17
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(values: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(values.to_vec()))]).unwrap()
    }

    fn ids(index: &KeyIndex, value: &str) -> Vec<u32> {
        let probe = batch(&[value]);
        let wanted = Wanted::of(index.reader(), &[index.spec.columns(&probe)]);
        let mut out = Vec::new();
        for h in wanted.hashes() {
            index.candidates(h, &mut out);
        }
        out
    }

    #[test]
    fn rows_are_found_by_principal_and_forgotten_below_the_oldest_kept() {
        let table = BTreeMap::from([("alice".to_string(), vec!["alice@acme.example".to_string()])]);
        let identities = Arc::new(Identities::new(&table).unwrap());
        let spec = KeySpec(vec![KeyPart { column: 0, principal: true }]);
        let mut index = KeyIndex::new(spec, identities, 0);
        index.add(&batch(&["alice", "bob", "Alice@acme.example "]), 0);
        index.add(&batch(&["bob", "alice@acme.example"]), 3);
        assert_eq!(ids(&index, "ALICE"), vec![4, 2, 0]);
        assert_eq!(index.count(ids_hash(&index, "alice")), 3);
        index.forget_before(3);
        assert_eq!(ids(&index, "alice"), vec![4]);
        assert_eq!(ids(&index, "bob"), vec![3]);
    }

    fn ids_hash(index: &KeyIndex, value: &str) -> u64 {
        let probe = batch(&[value]);
        index.reader().hash(&index.spec.key_columns(&probe), 0).unwrap()
    }

    #[test]
    fn wanted_gives_up_once_its_keys_weigh_the_budget() {
        let identities = Arc::new(Identities::new(&BTreeMap::new()).unwrap());
        let spec = KeySpec(vec![KeyPart { column: 0, principal: false }]);
        let mut index = KeyIndex::new(spec, identities, 0);
        index.add(&batch(&["a", "a", "a", "b", "c"]), 0);
        let due = batch(&["a", "b", "a", "c"]);
        let weigh =
            |mut budget| Wanted::within(index.reader(), &[index.spec.columns(&due)], |h| index.count(h), &mut budget);
        // a (3 rows) + b (1) + c (1): 5 in all; a repeated key weighs once.
        assert_eq!(weigh(6).map(|w| w.len()), Some(3));
        assert!(weigh(5).is_none());
        assert!(weigh(4).is_none());
    }
}
