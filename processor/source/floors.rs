//! Decided-below floors: committed with each offset, read back on
//! assignment, so a replay never decides a trigger twice.
//!
//! A committed offset is held back by what state still retains (a 90-day
//! look-back keeps the access topic read from far back), so a replay reads
//! many triggers that were decided long ago — and deciding them again
//! would judge them against a state that no longer holds what they looked
//! back at (a grant from 60 days ago replayed beside changes kept for 32).
//! The floor of a partition is the offset below which every trigger has
//! been decided (its lowest undecided trigger's, else the next to read);
//! it travels in the offset commit's metadata. A replay stores the rows below it as context
//! and admits only the rows at or above it as triggers.
//!
//! The access topic commits nothing (every instance reads it in full): the
//! floor of access partition `p` rides on change partition `p`, whose owner
//! decides access partition `p`'s triggers.

use rdkafka::TopicPartitionList;

/// Commit metadata: `vigil decided-below=N[ access-decided-below=M]`.
pub fn metadata(own: i64, access: Option<i64>) -> String {
    match access {
        Some(a) => format!("vigil decided-below={own} access-decided-below={a}"),
        None => format!("vigil decided-below={own}"),
    }
}

/// [`metadata`] read back: the partition's floor and, on a change
/// partition, the same-numbered access partition's. Anything else (a
/// commit by another tool, or before floors were) gives none.
pub fn parse(text: &str) -> (Option<i64>, Option<i64>) {
    let mut words = text.split(' ');
    if words.next() != Some("vigil") {
        return (None, None);
    }
    let (mut own, mut access) = (None, None);
    for word in words {
        match word.split_once('=') {
            Some(("decided-below", n)) => own = n.parse().ok(),
            Some(("access-decided-below", n)) => access = n.parse().ok(),
            _ => {}
        }
    }
    (own, access)
}

/// The floors in a list of committed offsets, by topic name and partition;
/// those of `change_topic`'s metadata for the access partitions under
/// `access_topic`.
pub fn floors_of(committed: &TopicPartitionList, change_topic: &str, access_topic: &str) -> Vec<((String, i32), i64)> {
    let mut out = Vec::new();
    for e in committed.elements() {
        let (own, access) = parse(e.metadata());
        if let Some(own) = own {
            out.push(((e.topic().to_string(), e.partition()), own));
        }
        if let (Some(access), true) = (access, e.topic() == change_topic) {
            out.push(((access_topic.to_string(), e.partition()), access));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_travel_as_commit_metadata() {
        assert_eq!(parse(&metadata(12, None)), (Some(12), None));
        assert_eq!(parse(&metadata(12, Some(7))), (Some(12), Some(7)));
        for other in ["", "12", "vigil", "vigil decided-below=x", "someone decided-below=3"] {
            assert_eq!(parse(other), (None, None), "{other:?}");
        }
    }

    #[test]
    fn access_floors_come_from_change_partitions() {
        let mut list = TopicPartitionList::new();
        list.add_partition("changes", 1).set_metadata(metadata(40, Some(9)));
        list.add_partition("deploys", 1).set_metadata(metadata(5, Some(99)));
        list.add_partition("deploys", 2).set_metadata("");
        let floors = floors_of(&list, "changes", "access");
        let expect = [(("changes", 1), 40), (("access", 1), 9), (("deploys", 1), 5)];
        let expect: Vec<((String, i32), i64)> = expect.iter().map(|((t, p), o)| ((t.to_string(), *p), *o)).collect();
        assert_eq!(floors, expect);
    }
}
