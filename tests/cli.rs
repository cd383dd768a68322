//! The binary as a user runs it: `vigil generate` into a broker, `vigil run`
//! against it, violations read back from the topic; and start-up errors.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{free_port, scrape, Running, VIGIL};
use vigil::embedded::{read_all, EmbeddedBroker};
use vigil::generate::Truth;

fn write_config(dir: &std::path::Path, bootstrap: &str, metrics_port: u16) -> std::path::PathBuf {
    let path = dir.join("vigil.toml");
    let text = format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"cli-test\"\n\n\
         [kafka.consumer_properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n\n\
         [time]\ntick = \"200ms\"\nidle_timeout = \"1s\"\n\n\
         [metrics]\naddr = \"127.0.0.1:{metrics_port}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn generate_then_run_publishes_exactly_the_truth() {
    let broker = EmbeddedBroker::start().unwrap();
    let bootstrap = broker.bootstrap_servers();
    for topic in ["change", "ci", "access", "deploy", "vigil-violations", "vigil-evidence"] {
        broker.create_topic(topic, 2).unwrap();
    }
    broker.create_topic("vigil-dead-letter", 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let truth_path = dir.path().join("truth.json");
    let identities = dir.path().join("identities.toml");
    let status = Command::new(VIGIL)
        .args(["generate", "--events", "4000", "--seed", "5", "--brokers", &bootstrap, "--truth"])
        .arg(&truth_path)
        .arg("--identities")
        .arg(&identities)
        .status()
        .unwrap();
    assert!(status.success());
    let truth: Truth = serde_json::from_str(&std::fs::read_to_string(&truth_path).unwrap()).unwrap();
    let expected: BTreeSet<String> = truth.violations.iter().map(|v| v.id.clone()).collect();
    assert!(!expected.is_empty());

    let port = free_port();
    let config = write_config(dir.path(), &bootstrap, port);
    // The user's path: append the organisation's identity map to the config.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&std::fs::read_to_string(&identities).unwrap());
    std::fs::write(&config, text).unwrap();
    let run =
        Running(Command::new(VIGIL).args(["run", "--config"]).arg(&config).stderr(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let found = loop {
        let records = read_all(&bootstrap, "vigil-violations", Duration::from_secs(30)).unwrap();
        let ids: BTreeSet<String> =
            records.iter().map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap()).collect();
        if ids.len() >= expected.len() || Instant::now() > deadline {
            assert_eq!(records.len(), ids.len(), "no id published twice");
            break ids;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(found, expected);

    let metrics =
        ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
    assert!(metrics.contains("vigil_events_consumed_total{topic=\"deploy\"}"), "{metrics}");
    assert!(metrics.contains("vigil_build_info"), "{metrics}");
    let mut ready = ureq::get(&format!("http://127.0.0.1:{port}/readyz")).call().unwrap();
    assert_eq!(ready.status(), 200);
    let body = ready.body_mut().read_to_string().unwrap();
    assert!(body.starts_with("ready\n") && body.contains("caught_up: yes"), "{body}");

    // kill -9 and start again: the restart replays retained state from the
    // committed offsets, decides only what was not decided before (the
    // committed floors), and publishes no id twice.
    drop(run);
    let _again =
        Running(Command::new(VIGIL).args(["run", "--config"]).arg(&config).stderr(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = scrape(port);
        let replayed = vigil::metrics::sample_sum(&text, "vigil_events_consumed_total");
        let pending = vigil::metrics::sample_sum(&text, "vigil_pending_triggers");
        let current = ["vigil_ready 1", "vigil_caught_up 1"].iter().all(|m| text.lines().any(|l| l.trim() == *m));
        if replayed > 0.0 && pending == 0.0 && current {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted processor did not catch up: {text}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let records = read_all(&bootstrap, "vigil-violations", Duration::from_secs(30)).unwrap();
    let ids: BTreeSet<String> = records.iter().map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap()).collect();
    assert_eq!(records.len(), expected.len(), "a restart published again");
    assert_eq!(ids, expected);
}

#[test]
fn a_broken_query_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let queries = dir.path().join("queries");
    std::fs::create_dir(&queries).unwrap();
    std::fs::copy("queries/cm-01.sql", queries.join("cm-01.sql")).unwrap();
    std::fs::write(
        queries.join("zz-broken.sql"),
        "-- id: ZZ-1\n-- title: broken\n-- severity: low\n-- trigger: deploy\nSELECT no_such_column AS subject FROM due\n",
    )
    .unwrap();
    let config = write_config(dir.path(), "127.0.0.1:1", free_port());
    let out =
        Command::new(VIGIL).args(["run", "--config"]).arg(&config).arg("--queries").arg(&queries).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("zz-broken.sql") && stderr.contains("no_such_column"), "{stderr}");
}

#[test]
fn an_unknown_config_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, "[time]\nlateness = \"5m\"\n").unwrap();
    let out = Command::new(VIGIL).args(["run", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("vigil.toml") && stderr.contains("lateness"), "{stderr}");
}

/// A copy of queries/ (controls and their cases) to break on purpose.
fn copy_queries(to: &std::path::Path) {
    std::fs::create_dir_all(to.join("tests")).unwrap();
    for sub in ["", "tests"] {
        for entry in std::fs::read_dir(std::path::Path::new("queries").join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, to.join(sub).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
}

#[test]
fn vigil_test_passes_the_shipped_cases_and_fails_with_a_diff_on_a_wrong_one() {
    let out = Command::new(VIGIL).arg("test").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let last = stdout.lines().last().unwrap();
    assert!(last.ends_with("passed, 0 failed"), "{last}");

    let dir = tempfile::tempdir().unwrap();
    copy_queries(dir.path());
    let cases = dir.path().join("tests/cm-01.toml");
    let text = std::fs::read_to_string(&cases).unwrap().replacen("expect = [\"dep-1\"]", "expect = []", 1);
    std::fs::write(&cases, text).unwrap();
    let out = Command::new(VIGIL).arg("test").arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL ") && stdout.contains("+ dep-1 (found, not expected)"), "{stdout}");
    assert!(stdout.lines().last().unwrap().ends_with("passed, 1 failed"), "{stdout}");
}

#[test]
fn vigil_check_accepts_the_shipped_controls_and_names_a_broken_file() {
    for args in [&["check"][..], &["check", "--queries", "queries"], &["check", "--config", "deploy/vigil.toml"]] {
        let out = Command::new(VIGIL).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let dir = tempfile::tempdir().unwrap();
    copy_queries(dir.path());
    std::fs::write(
        dir.path().join("zz-broken.sql"),
        "-- id: ZZ-1\n-- title: broken\n-- severity: low\n-- trigger: deploy\nSELECT subject, FROM WHERE due\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("zz-header.sql"), "-- id: ZZ-2\n-- title: t\n-- severity: urgent\nSELECT 1\n")
        .unwrap();
    let out = Command::new(VIGIL).args(["check", "--queries"]).arg(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("zz-broken.sql"), "{stderr}");
    assert!(stderr.contains("zz-header.sql:3") && stderr.contains("urgent"), "{stderr}");

    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, "[identities]\nalice = [\"shared\"]\nbob = [\"shared\"]\n").unwrap();
    let out = Command::new(VIGIL).args(["check", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("vigil.toml") && stderr.contains("shared"), "{stderr}");
}

/// Issue 7's acceptance: a demo's archive verifies; one changed cell of one
/// evidence row in a Parquet file makes `vigil verify` exit 1 naming that
/// record; `vigil query` answers SQL over the archive.
#[test]
fn a_demo_archive_verifies_until_one_cell_is_changed() {
    use datafusion::arrow::array::{Array, RecordBatch, StringArray};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use datafusion::parquet::arrow::ArrowWriter;

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("A");
    let status = Command::new(VIGIL)
        .args(["demo", "--events", "20000", "--seed", "5", "--quiet", "--archive"])
        .arg(&archive)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let verify = || Command::new(VIGIL).arg("verify").arg("--archive").arg(&archive).output().unwrap();
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" 0 problems"), "{text}");

    report_renders_in_chromium(&archive, dir.path());

    let query = Command::new(VIGIL)
        .args(["query", "--archive"])
        .arg(&archive)
        .arg("SELECT count(*) AS n FROM evidence WHERE environment = 'production'")
        .output()
        .unwrap();
    assert!(query.status.success(), "{}", String::from_utf8_lossy(&query.stderr));
    let records: usize = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        String::from_utf8_lossy(&query.stdout).contains(&format!("| {records} ")),
        "{}",
        String::from_utf8_lossy(&query.stdout)
    );

    // Change the service of the 4th row of the first evidence file.
    let file = std::fs::read_dir(archive.join("evidence")).unwrap().next().unwrap().unwrap().path();
    let file = std::fs::read_dir(file).unwrap().next().unwrap().unwrap().path();
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap().build().unwrap();
    let mut batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let batch = &batches[0];
    let schema = batch.schema();
    let (service_index, id_index) = (schema.index_of("service").unwrap(), schema.index_of("evidence_id").unwrap());
    let services = batch.column(service_index).as_any().downcast_ref::<StringArray>().unwrap();
    let tampered_id = batch.column(id_index).as_any().downcast_ref::<StringArray>().unwrap().value(3).to_string();
    let changed: StringArray =
        (0..services.len()).map(|i| Some(if i == 3 { "not-the-service" } else { services.value(i) })).collect();
    let mut columns = batch.columns().to_vec();
    columns[service_index] = std::sync::Arc::new(changed);
    batches[0] = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&file).unwrap(), schema, None).unwrap();
    for b in &batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();

    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains(&format!("{}:3: {tampered_id} ", file.display())), "{text}");
    assert!(text.contains("modified") && text.contains(" 1 problems"), "{text}");
}

/// `vigil report` over the archive writes HTML, CSV and JSON; headless
/// Chromium (Debian's, installed by tests/run.sh) renders the HTML with its
/// key figures, and its screenshot is far from blank.
fn report_renders_in_chromium(archive: &std::path::Path, dir: &std::path::Path) {
    let out = dir.join("report");
    let run = Command::new(VIGIL)
        .args(["report", "--from", "2000-01-01", "--to", "2100-01-01", "--archive"])
        .arg(archive)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let deploys = json["summary"]["deploys"].as_u64().unwrap();
    assert!(deploys > 0);
    let csv = std::fs::read_to_string(out.join("deploys.csv")).unwrap();
    assert_eq!(csv.lines().count() as u64, deploys + 1, "a header and a line per deploy");
    assert!(out.join("violations.csv").exists());

    let chromium = |args: &[&str], page: &std::path::Path| {
        let profile = tempfile::tempdir().unwrap();
        Command::new("chromium")
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
            .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium: install Debian's chromium (tests/run.sh does)")
    };
    let dom = chromium(&["--dump-dom"], &out.join("report.html"));
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains(&format!("<b id=\"deploys\">{deploys}</b>")), "the deploy count is not rendered");
    assert!(dom.contains("Violations by control") && dom.contains("Every deploy, traced"));
    let shot = |page: &std::path::Path, name: &str| {
        let png = dir.join(name);
        chromium(&[&format!("--screenshot={}", png.display()), "--window-size=1280,1400"], page);
        std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0)
    };
    let blank = dir.join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let (report, empty) = (shot(&out.join("report.html"), "report.png"), shot(&blank, "blank.png"));
    assert!(
        empty > 0 && report > 5 * empty,
        "the report's screenshot ({report} bytes) looks blank next to an empty page's ({empty})"
    );
}
