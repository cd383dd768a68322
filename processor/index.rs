//! Rows of a topic's state by the value of one key column (change_id,
//! commit_sha, …), so a control reads the rows its due triggers name
//! instead of everything retained.
//!
//! Every appended row gets an id (a counter per topic); the index keeps, per
//! value hash, the newest row id and how many rows have it (which lets a
//! lookup weigh a key before reading it), and per row id the previous row
//! id with the same hash — about 4 bytes per row plus one map entry per
//! distinct value. Evicted rows stay in the chains until garbage outweighs what is
//! retained, then the owner renumbers and rebuilds. Hash collisions are
//! resolved by comparing the values themselves.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use datafusion::arrow::array::{Array, ArrayRef, DictionaryArray, Int32Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::Int16Type;

const NONE: u32 = u32::MAX;

/// A value of a key column.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Text(String),
    Int(i64),
}

/// A key column's value at one row, borrowed.
enum KeyRef<'a> {
    Text(&'a str),
    Int(i64),
}

impl KeyRef<'_> {
    fn at(column: &ArrayRef, row: usize) -> Option<KeyRef<'_>> {
        if column.is_null(row) {
            return None;
        }
        let any = column.as_any();
        if let Some(a) = any.downcast_ref::<StringArray>() {
            return Some(KeyRef::Text(a.value(row)));
        }
        if let Some(a) = any.downcast_ref::<Int64Array>() {
            return Some(KeyRef::Int(a.value(row)));
        }
        // Enum fields: one symbols array shared by every batch.
        if let Some(a) = any.downcast_ref::<DictionaryArray<Int16Type>>() {
            let symbols = a.values().as_any().downcast_ref::<StringArray>()?;
            return Some(KeyRef::Text(symbols.value(a.keys().value(row) as usize)));
        }
        Some(KeyRef::Int(i64::from(any.downcast_ref::<Int32Array>()?.value(row))))
    }

    fn hash(&self) -> u64 {
        match self {
            KeyRef::Text(t) => fnv(t.as_bytes()),
            KeyRef::Int(i) => fnv(&i.to_le_bytes()),
        }
    }

    fn owned(&self) -> Key {
        match self {
            KeyRef::Text(t) => Key::Text((*t).to_string()),
            KeyRef::Int(i) => Key::Int(*i),
        }
    }

    fn equals(&self, key: &Key) -> bool {
        match (self, key) {
            (KeyRef::Text(a), Key::Text(b)) => *a == b.as_str(),
            (KeyRef::Int(a), Key::Int(b)) => a == b,
            _ => false,
        }
    }
}

/// The hash of row `row` of a key column (None for null or an unsupported
/// type).
fn hash_at(column: &ArrayRef, row: usize) -> Option<u64> {
    KeyRef::at(column, row).map(|k| k.hash())
}

/// The distinct values a lookup wants, by hash.
#[derive(Default)]
pub struct Wanted(HashMap<u64, Vec<Key>>);

impl Wanted {
    /// The distinct non-null values of `columns`.
    pub fn of(columns: &[&ArrayRef]) -> Wanted {
        let mut wanted = Wanted::default();
        for column in columns {
            for row in 0..column.len() {
                let Some(k) = KeyRef::at(column, row) else { continue };
                let values = wanted.0.entry(k.hash()).or_default();
                if !values.iter().any(|v| k.equals(v)) {
                    values.push(k.owned());
                }
            }
        }
        wanted
    }

    /// Distinct hashes wanted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn hashes(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.keys().copied()
    }

    /// Whether row `row` of `column` holds a wanted value.
    pub fn holds(&self, column: &ArrayRef, row: usize) -> bool {
        KeyRef::at(column, row).is_some_and(|k| self.matches(k.hash(), column, row))
    }

    /// Whether row `row` of `column` holds a wanted value of hash `hash`
    /// (chains are per hash; this resolves collisions).
    pub fn matches(&self, hash: u64, column: &ArrayRef, row: usize) -> bool {
        let Some(values) = self.0.get(&hash) else { return false };
        KeyRef::at(column, row).is_some_and(|k| values.iter().any(|v| k.equals(v)))
    }
}

/// FNV-1a, 64 bits.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
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

#[derive(Default)]
pub struct KeyIndex {
    /// Position of the key column in the topic's schema.
    pub column: usize,
    /// Per hash: the newest row id, and how many rows have it (evicted ones
    /// included until a rebuild).
    heads: HashMap<u64, (u32, u32), BuildHasherDefault<IdentityHasher>>,
    /// Row id (minus `base`) → previous row id with the same hash.
    next: Vec<u32>,
    base: u32,
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyIndex(column {}, {} values, {} rows)", self.column, self.heads.len(), self.next.len())
    }
}

impl KeyIndex {
    pub fn new(column: usize, base: u32) -> KeyIndex {
        KeyIndex { column, heads: HashMap::default(), next: Vec::new(), base }
    }

    /// Indexes a batch's key column whose first row has id `first`.
    pub fn add(&mut self, column: &ArrayRef, first: u32) {
        debug_assert_eq!(first, self.base + self.next.len() as u32);
        self.next.reserve(column.len());
        for row in 0..column.len() {
            let id = first + row as u32;
            let previous = match hash_at(column, row) {
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
