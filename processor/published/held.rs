//! The ids held against publishing twice, each with a bound on where its
//! trigger lies, so an id is forgotten once no replay can decide it again.
//!
//! A record is published after its trigger was read, so its trigger lies
//! below the offsets read so far of the trigger topic's partitions: its
//! [`Bound`], sent with the record as a header and read back with it. A
//! replay (a restart, a new owner after a rebalance) decides no trigger
//! below the decided-below floors committed with the group's offsets
//! ([`crate::source::floors`]); once they have passed a bound on every
//! partition it names, the triggers below it are never decided again, and
//! the ids it holds are forgotten. Floors only move forward while the group
//! runs (an operator resets them only with every member stopped, and a
//! restart reads the records, bounds and all, again).
//!
//! A record without a bound (published before bounds were) is held for good.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Offsets of one topic's partitions, above every trigger of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound {
    topic: String,
    next: Vec<(i32, i64)>,
}

/// The header a record's bound travels in.
pub const BOUND_HEADER: &str = "vigil.trigger.below";

impl Bound {
    /// The next offsets to read of `topic`'s partitions; `None` when none
    /// is read here (nothing bounds what could have been decided).
    pub fn new(topic: &str, next: impl Iterator<Item = (i32, i64)>) -> Option<Bound> {
        let next: Vec<(i32, i64)> = next.collect();
        (!next.is_empty()).then(|| Bound { topic: topic.to_string(), next })
    }

    /// `topic:partition=offset,…` (topic names hold neither `:` nor `=`).
    pub fn header(&self) -> String {
        let parts: Vec<String> = self.next.iter().map(|(p, o)| format!("{p}={o}")).collect();
        format!("{}:{}", self.topic, parts.join(","))
    }

    /// Reads [`Bound::header`] back; `None` for anything else.
    pub fn parse(text: &str) -> Option<Bound> {
        let (topic, parts) = text.split_once(':')?;
        let next = parts
            .split(',')
            .map(|part| {
                let (p, o) = part.split_once('=')?;
                Some((p.parse().ok()?, o.parse().ok()?))
            })
            .collect::<Option<Vec<(i32, i64)>>>()?;
        Bound::new(topic, next.into_iter())
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Whether `committed` has passed it on every partition it names.
    fn passed(&self, committed: &BTreeMap<(String, i32), i64>) -> bool {
        self.next.iter().all(|(p, o)| committed.get(&(self.topic.clone(), *p)).is_some_and(|c| c >= o))
    }
}

/// Ids, each with how many records hold it (a violation and its
/// retraction share one; a record read back after it was published here
/// is held twice).
#[derive(Default)]
pub struct Held {
    ids: foldhash::HashMap<u128, u32>,
    /// Ids published or read together, under one bound, oldest first.
    groups: VecDeque<(Arc<Bound>, Vec<u128>)>,
}

/// How many of the newest groups an id may join (records of one decision
/// alternate between a few trigger topics).
const JOINABLE: usize = 4;

impl Held {
    pub fn contains(&self, id: u128) -> bool {
        self.ids.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Holds `id` under `bound` (for good without one).
    pub fn insert(&mut self, id: u128, bound: Option<&Arc<Bound>>) {
        *self.ids.entry(id).or_default() += 1;
        let Some(bound) = bound else { return };
        let newest = self.groups.iter_mut().rev().take(JOINABLE);
        match newest.into_iter().find(|(b, _)| Arc::ptr_eq(b, bound) || **b == **bound) {
            Some((_, ids)) => ids.push(id),
            None => self.groups.push_back((bound.clone(), vec![id])),
        }
    }

    /// Forgets the groups whose bounds `committed` has passed; returns the
    /// ids no longer held at all.
    pub fn forget_passed(&mut self, committed: &BTreeMap<(String, i32), i64>) -> Vec<u128> {
        let mut gone = Vec::new();
        let groups = std::mem::take(&mut self.groups);
        for (bound, ids) in groups {
            if !bound.passed(committed) {
                self.groups.push_back((bound, ids));
                continue;
            }
            for id in ids {
                if let Some(n) = self.ids.get_mut(&id) {
                    *n -= 1;
                    if *n == 0 {
                        self.ids.remove(&id);
                        gone.push(id);
                    }
                }
            }
        }
        gone
    }

    /// The topics whose committed offsets could let something be forgotten.
    pub fn bounded_topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self.groups.iter().map(|(b, _)| b.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(topic: &str, next: &[(i32, i64)]) -> Arc<Bound> {
        Arc::new(Bound::new(topic, next.iter().copied()).unwrap())
    }

    fn committed(entries: &[(&str, i32, i64)]) -> BTreeMap<(String, i32), i64> {
        entries.iter().map(|(t, p, o)| ((t.to_string(), *p), *o)).collect()
    }

    #[test]
    fn bounds_travel_as_headers() {
        let b = bound("deploys", &[(0, 12), (3, 40)]);
        assert_eq!(b.header(), "deploys:0=12,3=40");
        assert_eq!(Bound::parse(&b.header()).as_ref(), Some(&*b));
        for bad in ["", "deploys", "deploys:", "deploys:0", "deploys:x=1", "deploys:0=1,"] {
            assert_eq!(Bound::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_id_is_forgotten_only_once_every_partition_of_its_bound_is_committed_past() {
        let mut held = Held::default();
        held.insert(1, Some(&bound("deploys", &[(0, 10), (1, 20)])));
        held.insert(2, None);
        // Committed past partition 0 only, and not yet to 20 on partition 1.
        assert!(held.forget_passed(&committed(&[("deploys", 0, 11), ("deploys", 1, 19)])).is_empty());
        // Another topic's offsets say nothing of it.
        assert!(held.forget_passed(&committed(&[("access", 0, 99), ("access", 1, 99)])).is_empty());
        assert!(held.contains(1));
        assert_eq!(held.forget_passed(&committed(&[("deploys", 0, 10), ("deploys", 1, 20)])), vec![1]);
        assert!(!held.contains(1));
        // Without a bound: held for good.
        assert!(held.contains(2));
        assert!(held.bounded_topics().is_empty());
    }

    #[test]
    fn an_id_held_twice_stays_until_both_records_are_passed() {
        let mut held = Held::default();
        held.insert(7, Some(&bound("deploys", &[(0, 10)])));
        held.insert(7, Some(&bound("deploys", &[(0, 30)])));
        assert!(held.forget_passed(&committed(&[("deploys", 0, 10)])).is_empty());
        assert!(held.contains(7));
        assert_eq!(held.forget_passed(&committed(&[("deploys", 0, 30)])), vec![7]);
        assert_eq!(held.len(), 0);
    }
}
