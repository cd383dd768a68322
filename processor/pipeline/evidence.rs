//! Turning the evidence query's rows into chained evidence records.

use std::sync::Arc;

use super::Pipeline;
use crate::controls::Finding;
use crate::evidence::{record_of, related_subject, EvidenceRecord, Outcome};
use crate::published::Bound;
use crate::schema::Topic;
use crate::violation::violation_id;

impl Pipeline {
    /// One record per due deploy not already on the evidence topic, with
    /// every related control's outcome, chained in its partition. Runs after
    /// the tick's violations are known (the evidence query waits longer than
    /// any control that judges a deploy).
    pub(super) fn evidence_records(
        &mut self,
        findings: Vec<Finding>,
        bound: Option<&Arc<Bound>>,
    ) -> anyhow::Result<Vec<EvidenceRecord>> {
        if findings.is_empty() {
            return Ok(Vec::new());
        }
        let partitions = self.sink.evidence_partitions()?;
        let controls: Vec<(usize, String, String, Topic)> = self
            .controls
            .controls()
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.meta.evidence)
            .map(|(i, c)| (i, c.meta.id.clone(), c.version.clone(), c.meta.trigger))
            .collect();
        let deploys: foldhash::HashSet<&str> = findings.iter().map(|f| f.subject.as_str()).collect();
        let judged: Vec<foldhash::HashSet<&str>> = controls
            .iter()
            .map(|(i, _, _, trigger)| match trigger {
                Topic::Deploy => self.controls.decided_among(*i, "deploy_id", &deploys),
                _ => foldhash::HashSet::default(),
            })
            .collect();
        let mut out = Vec::with_capacity(findings.len());
        for finding in &findings {
            let mut record = record_of(finding).map_err(anyhow::Error::msg)?;
            if self.published.contains(&record.evidence_id) {
                self.metrics.redecided.with_label_values(&["EVIDENCE"]).inc();
                continue;
            }
            record.partition = record.partition.rem_euclid(partitions);
            for ((_, id, version, trigger), judged) in controls.iter().zip(&judged) {
                let subject = match trigger {
                    Topic::Deploy => Some(finding.subject.clone()),
                    _ => related_subject(finding, id),
                };
                let Some(subject) = subject else { continue }; // the control does not concern this deploy
                let vid = violation_id(id, &subject);
                let outcome = if self.published.contains(&vid) && !self.published.is_retracted(&vid) {
                    Outcome::Violation
                } else if *trigger != Topic::Deploy || judged.contains(subject.as_str()) {
                    Outcome::Pass
                } else {
                    Outcome::NotApplicable
                };
                record.add_outcome(id, version, outcome, Some(vid));
            }
            record.chain(self.published.evidence_tail(record.partition));
            self.published.set_evidence_tail(record.partition, record.sequence, record.hash.clone());
            self.published.insert(&record.evidence_id, bound);
            out.push(record);
        }
        Ok(out)
    }

    /// The trigger topic of the evidence query (the deploys).
    pub(super) fn evidence_trigger(&self) -> Topic {
        self.controls.controls().iter().find(|c| c.meta.evidence).map_or(Topic::Deploy, |c| c.meta.trigger)
    }
}
