//! `vigil verify`: checks the evidence hash chains of an archive (or of the
//! evidence topic) and names every record that was modified, removed,
//! reordered or inserted.

use std::collections::BTreeMap;

use crate::evidence::{EvidenceRecord, GENESIS};

/// Where a record was read: `file:row` or `topic/partition/offset`.
pub type Position = String;

/// What is wrong with one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub position: Position,
    pub record: String,
    pub what: String,
}

/// The outcome of checking every chain.
#[derive(Debug, Default)]
pub struct Report {
    pub records: usize,
    pub partitions: usize,
    pub problems: Vec<Problem>,
}

/// Checks `records` (with where each was read; unreadable rows as errors):
/// per partition, ordered by sequence, every record's hash must be its own,
/// its prev_hash the previous record's hash, and the sequence must run
/// 0, 1, 2, … without gaps or repeats.
pub fn check(records: Vec<(Position, Result<EvidenceRecord, String>)>) -> Report {
    let mut report = Report::default();
    let mut chains: BTreeMap<i32, Vec<(Position, EvidenceRecord)>> = BTreeMap::new();
    for (position, record) in records {
        report.records += 1;
        match record {
            Ok(r) => chains.entry(r.partition).or_default().push((position, r)),
            Err(e) => report.problems.push(Problem {
                position,
                record: "(unreadable)".into(),
                what: format!("not an evidence record: {e}"),
            }),
        }
    }
    report.partitions = chains.len();
    for (partition, mut chain) in chains {
        chain.sort_by_key(|(_, r)| r.sequence);
        let mut expected_sequence = 0i64;
        let mut previous_hash = GENESIS.to_string();
        for (position, r) in &chain {
            let name =
                format!("{} (deploy {}, partition {partition}, sequence {})", r.evidence_id, r.deploy_id, r.sequence);
            let mut problem =
                |what: String| report.problems.push(Problem { position: position.clone(), record: name.clone(), what });
            if r.sequence < expected_sequence {
                problem(format!("sequence {} appears twice: a record was inserted", r.sequence));
            } else if r.sequence > expected_sequence {
                problem(format!(
                    "records {expected_sequence}..{} of partition {partition} are missing",
                    r.sequence - 1
                ));
            }
            if r.compute_hash() != r.hash {
                problem("its content does not match its hash: the record was modified".into());
            }
            if r.prev_hash != previous_hash {
                problem("it does not follow the previous record (prev_hash differs): records were removed, reordered or inserted before it".into());
            }
            expected_sequence = r.sequence + 1;
            previous_hash = r.hash.clone();
        }
    }
    report
}

impl Report {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&format!("{}: {}: {}\n", p.position, p.record, p.what));
        }
        out.push_str(&format!(
            "verify: {} records in {} chains, {} problems\n",
            self.records,
            self.partitions,
            self.problems.len()
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<EvidenceRecord> {
        let mut out: Vec<EvidenceRecord> = Vec::new();
        for i in 0..n {
            let mut r: EvidenceRecord = serde_json::from_value(serde_json::json!({
                "evidence_id": format!("e{i}"), "deploy_id": format!("d{i}"), "service": "s", "environment": "production",
                "event_time": i, "status": "succeeded", "commit_sha": "c", "deployer": "x", "automated": false,
                "reviewers": [], "ci_runs": [], "source": "", "outcomes": [], "violations": [], "compliant": true,
                "partition": 0, "sequence": 0, "prev_hash": ""
            }))
            .unwrap();
            r.chain(out.last().map(|p| (p.sequence, p.hash.clone())));
            out.push(r);
        }
        out
    }

    fn run(records: Vec<EvidenceRecord>) -> Report {
        check(records.into_iter().enumerate().map(|(i, r)| (format!("row {i}"), Ok(r))).collect())
    }

    #[test]
    fn an_intact_chain_passes_and_every_tamper_is_named() {
        assert!(run(chain(5)).problems.is_empty());
        let mut modified = chain(5);
        modified[2].service = "other".into();
        let report = run(modified);
        assert_eq!(report.problems.len(), 1, "{}", report.render());
        assert!(report.problems[0].record.starts_with("e2 ") && report.problems[0].what.contains("modified"));
        let mut removed = chain(5);
        removed.remove(3);
        let report = run(removed);
        assert!(
            report.problems.iter().any(|p| p.record.starts_with("e4 ") && p.what.contains("missing")),
            "{}",
            report.render()
        );
        let mut inserted = chain(5);
        let mut extra = inserted[1].clone();
        extra.deploy_id = "forged".into();
        extra.hash = extra.compute_hash();
        inserted.insert(2, extra);
        assert!(run(inserted).problems.iter().any(|p| p.what.contains("twice")));
    }
}
