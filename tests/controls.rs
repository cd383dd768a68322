//! The shipped controls against their fixture cases (queries/tests/*.toml),
//! the case runner itself, and the generated controls reference.

use std::collections::BTreeMap;
use std::path::Path;

use vigil::controls::{builtin_sources, parse_meta, reference, ControlSet};
use vigil::schema::Catalog;
use vigil::testing::{run_dir, run_file};

#[tokio::test]
async fn every_shipped_control_passes_its_cases_and_has_at_least_two() {
    let report = run_dir(Path::new("queries")).await.unwrap();
    assert_eq!(report.failed(), 0, "{}", report.render());
    assert!(report.untested.is_empty(), "controls without cases: {:?}", report.untested);
    let mut per_control: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &report.results {
        *per_control.entry(r.control.as_str()).or_default() += 1;
    }
    for source in builtin_sources() {
        let id = parse_meta(&source.sql).unwrap().id;
        let n = per_control.get(id.as_str()).copied().unwrap_or(0);
        assert!(n >= 2, "{id} has {n} cases; every control needs positive and negative cases");
    }
}

const DEPLOY_DEFAULTS: &str = r#"
control = "CM-01"
[defaults.deploy]
deploy_id = "dep-1"
service = "payments"
environment = "production"
commit_sha = "c0ffee"
actor = "svc-deploybot"
automated = true
status = "succeeded"
"#;

#[tokio::test]
async fn a_failing_case_shows_what_was_missing_and_what_was_unexpected() {
    let text = format!(
        "{DEPLOY_DEFAULTS}\n[[case]]\nname = \"wrong on purpose\"\n\
         events = [{{ topic = \"deploy\", at = \"T\" }}]\nexpect = [\"dep-9\"]\n"
    );
    let results = run_file("inline.toml", &text, &builtin_sources()).await.unwrap();
    assert_eq!(results.len(), 1);
    let problems = results[0].problems.join("\n");
    assert!(!results[0].passed());
    assert!(problems.contains("- dep-9 (expected, not found)"), "{problems}");
    assert!(problems.contains("+ dep-1 (found, not expected)"), "{problems}");
}

#[tokio::test]
async fn decided_checks_what_is_known_at_a_watermark() {
    // CM-01's grace is 15 minutes: at T+14m nothing may be decided yet.
    let text = format!(
        "{DEPLOY_DEFAULTS}\n[[case]]\nname = \"too early\"\n\
         events = [{{ topic = \"deploy\", at = \"T\" }}, {{ watermark = \"T+14m\", decided = [\"dep-1\"] }}]\n\
         expect = [\"dep-1\"]\n"
    );
    let results = run_file("inline.toml", &text, &builtin_sources()).await.unwrap();
    let problems = results[0].problems.join("\n");
    assert!(problems.contains("at watermark \"T+14m\"") && problems.contains("- dep-1"), "{problems}");
}

#[tokio::test]
async fn a_fixture_event_that_does_not_decode_names_the_event_and_field() {
    let text = format!(
        "{DEPLOY_DEFAULTS}\n[[case]]\nname = \"bad fixture\"\n\
         events = [{{ topic = \"deploy\", at = \"T\", automated = \"yes\" }}]\nexpect = []\n"
    );
    let results = run_file("inline.toml", &text, &builtin_sources()).await.unwrap();
    let problems = results[0].problems.join("\n");
    assert!(problems.contains("event 1 (deploy)") && problems.contains("automated"), "{problems}");
}

#[tokio::test]
async fn an_unknown_control_or_key_is_reported() {
    let text = "control = \"NOPE-1\"\n[[case]]\nname = \"x\"\nevents = []\nexpect = []\n";
    let results = run_file("inline.toml", text, &builtin_sources()).await.unwrap();
    assert!(results[0].problems[0].contains("NOPE-1"), "{:?}", results[0].problems);
    let err = run_file("inline.toml", "colour = \"red\"\n", &builtin_sources()).await.unwrap_err();
    assert!(err.contains("inline.toml") && err.contains("colour"), "{err}");
}

#[tokio::test]
async fn every_shipped_control_plans_against_the_schemas() {
    let catalog = Catalog::builtin().unwrap();
    let errors = ControlSet::check(&builtin_sources(), &catalog, &Default::default()).await;
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn the_controls_reference_is_in_sync_with_the_headers() {
    let want = reference(&builtin_sources()).unwrap();
    let have = std::fs::read_to_string("docs/controls.md").unwrap_or_default();
    assert!(
        have == want,
        "docs/controls.md is out of date with the control headers; regenerate it with \
         `vigil docs --out docs/controls.md`"
    );
}
