//! `vigil test`: control test cases written as fixture events.
//!
//! A directory of controls (`*.sql`) has its cases in `tests/*.toml`, one
//! file per control by convention:
//!
//! ```toml
//! control = "CM-01"              # whose violations the cases compare
//!
//! [defaults.deploy]              # fields every deploy event starts from
//! deploy_id = "dep-1"
//! service = "payments"
//!
//! [identities]                   # optional, as in the config
//! alice = ["alice-gh"]
//!
//! [[case]]
//! name = "approval one second after the deploy"
//! events = [
//!   { topic = "change", at = "T+1s", change_id = "CHG-1", action = "approved" },
//!   { topic = "deploy", at = "T", change_id = "CHG-1" },
//! ]
//! expect = ["dep-1"]             # subjects; { subject = "dep-1", late = true } for a late trigger
//! ```
//!
//! Times are written relative to a fixed instant `T` (`"T"`, `"T-10m"`,
//! `"T+1s"`) in `at` and in any other field. Events are fed in the order
//! written, through the same JSON decoder the stream uses. A step
//! `{ watermark = "T+16m" }` evaluates whatever is due at that watermark;
//! events after it are judged against it (a trigger whose decision time has
//! passed is late); `decided = [...]` in a step checks the violations found
//! up to it. After the last event everything still pending is decided.
//! Only the named control's violations are compared; `unset = ["field"]`
//! drops a default from one event. A late event that changes a decision
//! already made is an amendment: a new violation shows in `expect` as late,
//! a withdrawn one is listed in `retracted = [...]`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value as Json};

use crate::controls::{load_dir, Amendment, ControlSet, ControlSource};
use crate::decode::{Decoder, Format, RawMessage, SchemaResolver, TimeBounds};
use crate::duration;
use crate::identity::Identities;
use crate::schema::{Catalog, Topic};
use crate::state::State;

/// The instant `T` of every fixture: 2026-01-01T12:00:00Z.
pub const T_MS: i64 = 1_767_268_800_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    control: Option<String>,
    #[serde(default)]
    defaults: BTreeMap<String, Map<String, Json>>,
    #[serde(default)]
    identities: BTreeMap<String, Vec<String>>,
    #[serde(default, rename = "case")]
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    control: Option<String>,
    #[serde(default)]
    events: Vec<Map<String, Json>>,
    #[serde(default)]
    expect: Vec<ExpectEntry>,
    /// Subjects whose violation a late event retracts (an amendment).
    #[serde(default)]
    retracted: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ExpectEntry {
    Subject(String),
    Full { subject: String, late: bool },
}

/// What one case came to.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: String,
    pub name: String,
    pub control: String,
    /// Empty when the case passed; otherwise what differed, one line each.
    pub problems: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The outcome of a run over a directory.
#[derive(Debug, Default)]
pub struct Report {
    pub results: Vec<CaseResult>,
    /// Control ids in the directory that no case exercises.
    pub untested: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// PASS/FAIL per case, the differences under each failure, and the tally.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for r in &self.results {
            let verdict = if r.passed() { "PASS" } else { "FAIL" };
            out.push_str(&format!("{verdict} {} [{}] {}\n", r.file, r.control, r.name));
            for p in &r.problems {
                out.push_str(&format!("    {p}\n"));
            }
        }
        if !self.untested.is_empty() {
            out.push_str(&format!("controls without cases: {}\n", self.untested.join(", ")));
        }
        out.push_str(&format!("{} passed, {} failed\n", self.passed(), self.failed()));
        out
    }
}

/// Runs every case in `dir/tests/*.toml` against the controls in `dir/*.sql`.
/// Errors are problems with the directory or a case file as a whole; a case
/// that cannot run is reported as a failure with the reason.
pub async fn run_dir(dir: &Path) -> Result<Report, String> {
    let sources = load_dir(dir)?;
    let tests = dir.join("tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests)
        .map_err(|e| format!("{}: {e}; put test cases in {}/*.toml", tests.display(), tests.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{}: no *.toml test files", tests.display()));
    }
    let mut report = Report::default();
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let results = run_file(&path.display().to_string(), &text, &sources).await?;
        report.results.extend(results);
    }
    let tested: BTreeSet<&str> = report.results.iter().map(|r| r.control.as_str()).collect();
    for source in &sources {
        if let Ok(meta) = crate::controls::parse_meta(&source.sql) {
            if !tested.contains(meta.id.as_str()) {
                report.untested.push(meta.id);
            }
        }
    }
    Ok(report)
}

/// Runs the cases of one file (`name` is shown in results and errors).
pub async fn run_file(name: &str, text: &str, sources: &[ControlSource]) -> Result<Vec<CaseResult>, String> {
    let file: CaseFile = toml::from_str(text).map_err(|e| format!("{name}: {e}"))?;
    let catalog = Catalog::builtin()?;
    let identities = Arc::new(Identities::new(&file.identities).map_err(|e| format!("{name}: {e}"))?);
    let mut state = State::new(Topic::ALL.map(|t| &**catalog.event(t)));
    let mut controls =
        ControlSet::plan(sources, &catalog, &state, &identities).await.map_err(|e| format!("{name}: {e}"))?;
    for (topic, key) in controls.key_columns() {
        state.index(topic, key, &identities);
    }
    let resolver = Arc::new(SchemaResolver::new(None, None)?);
    let bounds = TimeBounds { max_age_ms: i64::MAX / 4, max_future_ms: i64::MAX / 4 };
    let decoders = Topic::ALL.map(|t| Decoder::new(catalog.event(t).clone(), resolver.clone(), Format::Json, bounds));
    let mut fixture = Fixture { decoders: &decoders, state, offset: 0 };
    let mut results = Vec::new();
    for case in &file.cases {
        let control = case.control.clone().or_else(|| file.control.clone()).unwrap_or_default();
        let mut result =
            CaseResult { file: name.to_string(), name: case.name.clone(), control: control.clone(), problems: vec![] };
        if !controls.controls().iter().any(|c| c.meta.id == control) {
            result
                .problems
                .push(format!("no control `{control}` among the loaded controls; name one with `control = \"…\"`"));
        } else {
            match fixture.run(&mut controls, &file.defaults, case, &control).await {
                Ok((got, mut problems)) => {
                    problems.extend(diff(&expected(&case.expect), &got));
                    result.problems = problems;
                }
                Err(e) => result.problems.push(e),
            }
        }
        controls.reset();
        fixture.state.clear();
        results.push(result);
    }
    Ok(results)
}

struct Fixture<'a> {
    decoders: &'a [Decoder; 4],
    state: State,
    offset: i64,
}

impl Fixture<'_> {
    /// Feeds the case's events and returns (subject, late) of every
    /// violation of `control`.
    async fn run(
        &mut self,
        controls: &mut ControlSet,
        defaults: &BTreeMap<String, Map<String, Json>>,
        case: &Case,
        control: &str,
    ) -> Result<(BTreeSet<(String, bool)>, Vec<String>), String> {
        let mut got = BTreeSet::new();
        let mut retracted = BTreeSet::new();
        let mut problems = Vec::new();
        let mut watermark = None;
        for (i, step) in case.events.iter().enumerate() {
            let at = |what: &str| format!("event {} ({what})", i + 1);
            if let Some(w) = step.get("watermark") {
                let w = w.as_str().ok_or_else(|| format!("{}: write the watermark as \"T+…\"", at("watermark")))?;
                let w = relative_ms(w).ok_or_else(|| format!("{}: `{w}` is not T, T+dur or T-dur", at("watermark")))?;
                watermark = Some(w);
                decide(controls, &self.state, w, control, &mut got).await?;
                if let Some(decided) = step.get("decided") {
                    let want: Vec<ExpectEntry> = serde_json::from_value(decided.clone())
                        .map_err(|e| format!("{}: `decided`: {e}", at("watermark")))?;
                    for p in diff(&expected(&want), &got) {
                        problems.push(format!("at watermark {}: {p}", step["watermark"]));
                    }
                }
                continue;
            }
            let topic_name = step.get("topic").and_then(Json::as_str).unwrap_or_default();
            let topic = Topic::from_name(topic_name)
                .ok_or_else(|| format!("{}: `topic` must be change, ci, access or deploy", at("topic")))?;
            let fields = self.fields(topic, defaults, step).map_err(|e| format!("{}: {e}", at(topic_name)))?;
            self.offset += 1;
            let payload = serde_json::to_vec(&fields).map_err(|e| e.to_string())?;
            let message = RawMessage::new(Some(&payload), 0, self.offset);
            let decoded = self.decoders[topic.index()].decode([message], T_MS);
            if let Some(reject) = decoded.rejects.first() {
                return Err(format!("{}: {}", at(topic_name), reject.error));
            }
            if let Some(batch) = decoded.batch {
                controls.admit(topic, &batch, watermark).map_err(|e| e.to_string())?;
                let time_index = self.decoders[topic.index()].time_index();
                let amendments = controls
                    .append_amending(&mut self.state, topic, batch, time_index, watermark)
                    .await
                    .map_err(|e| e.to_string())?;
                for amendment in amendments {
                    match amendment {
                        Amendment::New { control: c, finding } if controls.controls()[c].meta.id == control => {
                            got.insert((finding.subject, true));
                        }
                        Amendment::Retracted { control: c, finding } if controls.controls()[c].meta.id == control => {
                            retracted.insert((finding.subject, false));
                        }
                        _ => {}
                    }
                }
            }
        }
        decide(controls, &self.state, i64::MAX / 4, control, &mut got).await?;
        let want: BTreeSet<(String, bool)> = case.retracted.iter().map(|s| (s.clone(), false)).collect();
        problems.extend(diff(&want, &retracted).into_iter().map(|p| format!("retracted: {p}")));
        Ok((got, problems))
    }

    /// The event's canonical JSON: defaults, then its own fields, times resolved.
    fn fields(
        &self,
        topic: Topic,
        defaults: &BTreeMap<String, Map<String, Json>>,
        step: &Map<String, Json>,
    ) -> Result<Map<String, Json>, String> {
        let mut fields = defaults.get(topic.name()).cloned().unwrap_or_default();
        for (k, v) in step {
            match k.as_str() {
                "topic" | "unset" => {}
                "at" => {
                    fields.insert("event_time".into(), v.clone());
                }
                _ => {
                    fields.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(unset) = step.get("unset").and_then(Json::as_array) {
            for key in unset.iter().filter_map(Json::as_str) {
                fields.remove(key);
            }
        }
        fields.entry("event_id").or_insert_with(|| Json::String(format!("{}-{}", topic.name(), self.offset + 1)));
        if !fields.contains_key("event_time") {
            return Err("every event needs `at = \"T…\"`".into());
        }
        for value in fields.values_mut() {
            if let Some(ms) = value.as_str().and_then(relative_ms) {
                *value = Json::from(ms);
            }
        }
        Ok(fields)
    }
}

async fn decide(
    controls: &mut ControlSet,
    state: &State,
    watermark: i64,
    control: &str,
    got: &mut BTreeSet<(String, bool)>,
) -> Result<(), String> {
    for evaluation in controls.evaluate(state, watermark).await.map_err(|e| e.to_string())? {
        if controls.controls()[evaluation.control].meta.id == control {
            got.extend(evaluation.findings.into_iter().map(|f| (f.subject, f.late)));
        }
    }
    Ok(())
}

fn expected(entries: &[ExpectEntry]) -> BTreeSet<(String, bool)> {
    entries
        .iter()
        .map(|e| match e {
            ExpectEntry::Subject(s) => (s.clone(), false),
            ExpectEntry::Full { subject, late } => (subject.clone(), *late),
        })
        .collect()
}

fn show((subject, late): &(String, bool)) -> String {
    if *late {
        format!("{subject} (late)")
    } else {
        subject.clone()
    }
}

/// One line per difference: `- subject` expected but not found, `+ subject`
/// found but not expected.
fn diff(expected: &BTreeSet<(String, bool)>, got: &BTreeSet<(String, bool)>) -> Vec<String> {
    let mut out = Vec::new();
    let list = |s: &BTreeSet<(String, bool)>| {
        if s.is_empty() {
            "no violations".to_string()
        } else {
            s.iter().map(show).collect::<Vec<_>>().join(", ")
        }
    };
    if expected != got {
        out.push(format!("expected: {}", list(expected)));
        out.push(format!("     got: {}", list(got)));
        out.extend(expected.difference(got).map(|e| format!("- {} (expected, not found)", show(e))));
        out.extend(got.difference(expected).map(|e| format!("+ {} (found, not expected)", show(e))));
    }
    out
}

/// `T`, `T+1s`, `T-10m` → epoch ms.
fn relative_ms(text: &str) -> Option<i64> {
    let rest = text.strip_prefix('T')?;
    if rest.is_empty() {
        return Some(T_MS);
    }
    let (sign, d) = match rest.as_bytes()[0] {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    duration::parse(d).ok().map(|d| T_MS + sign * duration::millis(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        assert_eq!(relative_ms("T"), Some(T_MS));
        assert_eq!(relative_ms("T+1s"), Some(T_MS + 1000));
        assert_eq!(relative_ms("T-10m"), Some(T_MS - 600_000));
        assert_eq!(relative_ms("Tuesday"), None);
        assert_eq!(relative_ms("payments"), None);
    }
}
