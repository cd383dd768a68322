//! Audit evidence: one record per finished production deploy, written once
//! every control that judges the deploy has decided.
//!
//! The built-in evidence query (`queries/evidence/deploy.sql`, planned and
//! scheduled like a control with `-- record: evidence`) gathers the trace —
//! commit, pull request and reviewers, CI runs, change request and its
//! approver, the access grant the deployer held at the deploy. The
//! processor adds every control's outcome for the deploy (violation, pass,
//! or not applicable) and chains
//! the records: each carries its partition, its sequence number there, the
//! previous record's hash and its own hash, sha-256 over the previous hash
//! and the record's canonical JSON (fields in declaration order, `hash`
//! left out). Changing, removing, reordering or inserting a record breaks
//! the chain at that record (`vigil verify`).
//!
//! A partition of the evidence topic has one writer: records go to the
//! partition number of the deploy's own partition, which one instance owns.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::controls::Finding;

/// The hash the first record of a partition chains to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One evidence record, as published (JSON) and archived (Parquet).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRecord {
    pub evidence_id: String,
    pub deploy_id: String,
    pub service: String,
    pub environment: String,
    /// The deploy's event time, epoch milliseconds.
    pub event_time: i64,
    pub status: String,
    pub commit_sha: String,
    pub artifact_digest: Option<String>,
    pub deployer: String,
    pub automated: bool,
    pub change_id: Option<String>,
    pub change_approver: Option<String>,
    pub change_approved_at: Option<i64>,
    pub change_type: Option<String>,
    /// `repo#number`, or `repo#commit` for a merge without a number: the
    /// subject SOD-01 files it under.
    pub pull_request: Option<String>,
    pub pr_author: Option<String>,
    pub merged_by: Option<String>,
    #[serde(default)]
    pub reviewers: Vec<String>,
    #[serde(default)]
    pub ci_runs: Vec<String>,
    pub access_grant: Option<String>,
    /// The deploy event: `event_id@deploy/partition/offset`.
    pub source: String,
    /// `CONTROL outcome version`, outcome pass, violation or not_applicable.
    #[serde(default)]
    pub outcomes: Vec<String>,
    /// Ids of the violations among the outcomes.
    #[serde(default)]
    pub violations: Vec<String>,
    pub compliant: bool,
    pub partition: i32,
    pub sequence: i64,
    pub prev_hash: String,
    #[serde(default)]
    pub hash: String,
}

/// A control's outcome for one deploy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Violation,
    NotApplicable,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Violation => "violation",
            Outcome::NotApplicable => "not_applicable",
        }
    }
}

/// A row of the evidence query before the outcomes and the chain.
pub fn record_of(finding: &Finding) -> Result<EvidenceRecord, String> {
    let row = finding.details.as_ref().ok_or("an evidence finding without its row")?;
    let text = |k: &str| row.text(k);
    let list = |k: &str| row.list(k);
    Ok(EvidenceRecord {
        evidence_id: crate::violation::violation_id("EVIDENCE", &finding.subject),
        deploy_id: finding.subject.clone(),
        service: finding.service.clone(),
        environment: text("environment").unwrap_or_default(),
        event_time: finding.event_time_ms,
        status: text("status").unwrap_or_default(),
        commit_sha: text("commit_sha").unwrap_or_default(),
        artifact_digest: text("artifact_digest"),
        deployer: text("deployer").unwrap_or_default(),
        automated: row.bool("automated").unwrap_or(false),
        change_id: text("change_id"),
        change_approver: text("change_approver"),
        change_approved_at: row.time_ms("change_approved_at"),
        change_type: text("change_type"),
        pull_request: text("pull_request"),
        pr_author: text("pr_author"),
        merged_by: text("merged_by"),
        reviewers: list("reviewers"),
        ci_runs: list("ci_runs"),
        access_grant: text("access_grant"),
        source: text("source").unwrap_or_default(),
        outcomes: Vec::new(),
        violations: Vec::new(),
        compliant: true,
        partition: row.int("source_partition").unwrap_or(0) as i32,
        sequence: 0,
        prev_hash: String::new(),
        hash: String::new(),
    })
}

/// The subject a control's outcome for this deploy is filed under, from the
/// query's `subject:<CONTROL>` columns.
pub fn related_subject(finding: &Finding, control: &str) -> Option<String> {
    finding.details.as_ref()?.text(&format!("subject:{control}"))
}

impl EvidenceRecord {
    /// Records a control's outcome.
    pub fn add_outcome(&mut self, control: &str, version: &str, outcome: Outcome, violation_id: Option<String>) {
        self.outcomes.push(format!("{control} {} {version}", outcome.name()));
        if outcome == Outcome::Violation {
            self.compliant = false;
            self.violations.extend(violation_id);
        }
    }

    /// sha-256 over the previous hash and the canonical JSON of the record
    /// without its own hash.
    pub fn compute_hash(&self) -> String {
        let mut unhashed = self.clone();
        unhashed.hash = String::new();
        let json = serde_json::to_vec(&unhashed).expect("a record serialises");
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(b"\n");
        h.update(&json);
        hex::encode(h.finalize())
    }

    /// Places the record after `tail` (the partition's last sequence and
    /// hash, if any) and seals it.
    pub fn chain(&mut self, tail: Option<(i64, String)>) {
        let (sequence, prev) = match tail {
            Some((s, h)) => (s + 1, h),
            None => (0, GENESIS.to_string()),
        };
        self.sequence = sequence;
        self.prev_hash = prev;
        self.hash = self.compute_hash();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        ArrayRef, Int32Array, ListBuilder, RecordBatch, StringArray, StringBuilder, TimestampMillisecondArray,
    };

    use super::*;
    use crate::controls::row::Row;

    fn record() -> EvidenceRecord {
        let mut reviewers = ListBuilder::new(StringBuilder::new());
        reviewers.values().append_value("b");
        reviewers.values().append_value("a");
        reviewers.append(true);
        let batch = RecordBatch::try_from_iter([
            ("environment", Arc::new(StringArray::from(vec!["production"])) as ArrayRef),
            ("status", Arc::new(StringArray::from(vec!["succeeded"]))),
            ("reviewers", Arc::new(reviewers.finish())),
            ("change_approved_at", Arc::new(TimestampMillisecondArray::from(vec![1_795_167_000_000]))),
            ("source_partition", Arc::new(Int32Array::from(vec![2]))),
        ])
        .unwrap();
        let finding = Finding {
            subject: "d-1".into(),
            service: "payments".into(),
            event_time_ms: 1_795_000_000_000,
            message: String::new(),
            evidence: vec![],
            late: false,
            details: Some(Row::new(std::sync::Arc::new(batch), 0)),
        };
        record_of(&finding).unwrap()
    }

    #[test]
    fn rows_become_records_and_chain() {
        let mut first = record();
        assert_eq!(first.reviewers, ["a", "b"]);
        assert_eq!(first.partition, 2);
        assert_eq!(first.change_approved_at, Some(1_795_167_000_000));
        first.add_outcome("CM-01", "1", Outcome::Violation, Some("abc".into()));
        first.chain(None);
        assert_eq!(first.prev_hash, GENESIS);
        assert!(!first.compliant);
        let mut second = record();
        second.chain(Some((first.sequence, first.hash.clone())));
        assert_eq!((second.sequence, second.prev_hash.as_str()), (1, first.hash.as_str()));
        assert_eq!(second.hash, second.compute_hash());
        let mut tampered = second.clone();
        tampered.service = "ledger".into();
        assert_ne!(tampered.compute_hash(), second.hash);
    }
}
