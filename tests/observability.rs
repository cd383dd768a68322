//! Day-one operations: the metrics a finished demo serves pass `promtool
//! check metrics`; the Prometheus config, alert rules (with `promtool test
//! rules` cases) and the example Alertmanager config are valid; every PromQL
//! expression in the dashboards and rules parses (Prometheus's own parser,
//! through promtool) and names only metrics Vigil exports; violations reach
//! a real Alertmanager, including one that comes up late.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{alerts_in, free_port, scrape, Running, VIGIL};

/// Runs a tool that `tests/run.sh` installs (promtool, amtool); a missing
/// one fails the test with what to install.
fn tool(name: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name}: {e}; install Debian's prometheus and prometheus-alertmanager (tests/run.sh does)")
    });
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_prometheus_config_and_alert_rules_are_valid_and_their_cases_pass() {
    for args in [
        &["check", "config", "deploy/prometheus/prometheus.yml"][..],
        &["check", "rules", "deploy/prometheus/rules.yml"],
        &["test", "rules", "deploy/prometheus/rules.test.yml"],
    ] {
        let (ok, text) = tool("promtool", args);
        assert!(ok, "promtool {args:?}:\n{text}");
    }
}

#[test]
fn the_example_alertmanager_config_routes_critical_violations_to_on_call() {
    let config = "deploy/alertmanager/alertmanager.yml";
    let (ok, text) = tool("amtool", &["check-config", config]);
    assert!(ok, "{text}");
    let route = |labels: &[&str]| {
        let mut args = vec!["config", "routes", "test", "--config.file", config];
        args.extend(labels);
        let (ok, text) = tool("amtool", &args);
        assert!(ok, "{text}");
        text.lines().find(|l| !l.starts_with("Warning")).unwrap_or_default().trim().to_string()
    };
    assert_eq!(route(&["alertname=VigilViolation", "severity=critical"]), "oncall");
    assert_eq!(route(&["alertname=VigilViolation", "severity=high"]), "compliance-queue");
    assert_eq!(route(&["alertname=VigilConsumerLagHigh", "component=vigil"]), "platform");
}

/// Every PromQL expression of the dashboards and the alert rules.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("deploy/grafana/dashboards").unwrap() {
        let path = entry.unwrap().path();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let origin = format!("{} / {}", path.display(), panel["title"].as_str().unwrap());
                out.push((origin, target["expr"].as_str().unwrap().to_string()));
            }
        }
    }
    let rules = std::fs::read_to_string("deploy/prometheus/rules.yml").unwrap();
    for (i, line) in rules.lines().enumerate() {
        if let Some(expr) = line.trim().strip_prefix("expr: ") {
            out.push((format!("deploy/prometheus/rules.yml:{}", i + 1), expr.to_string()));
        }
    }
    assert!(out.len() > 20, "expressions not found: {out:?}");
    out
}

/// The metric names an expression selects: identifiers that are not in
/// strings, label matchers, grouping lists or ranges, not functions or
/// aggregations (followed by `(`) and not keywords.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 12] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
    ];
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let (mut names, mut i) = (Vec::new(), 0);
    let skip_to =
        |from: usize, close: char| chars[from..].iter().position(|c| *c == close).map_or(chars.len(), |p| from + p + 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i = skip_to(i + 1, '"');
        } else if c == '{' {
            i = skip_to(i, '}');
        } else if c == '[' {
            i = skip_to(i, ']');
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if AGGREGATIONS.contains(&word.as_str()) {
                // `sum by (…) (…)`: its grouping list follows
            } else if KEYWORDS.contains(&word.as_str()) {
                if matches!(word.as_str(), "by" | "without" | "on" | "ignoring" | "group_left" | "group_right") {
                    // its label list
                    if next == Some(&'(') {
                        i = skip_to(i, ')');
                    }
                }
            } else if next != Some(&'(') {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn every_promql_expression_parses_and_names_only_metrics_vigil_exports() {
    let exported = vigil::metrics::Metrics::new().names();
    assert!(exported.iter().any(|n| n == "process_resident_memory_bytes"), "{exported:?}");
    let known = |name: &str| {
        name == "up"
            || exported.iter().any(|e| {
                name == e || ["_bucket", "_sum", "_count"].iter().any(|s| name.strip_suffix(s) == Some(e.as_str()))
            })
    };
    let mut rules = String::from("groups:\n  - name: parse\n    rules:\n");
    for (i, (origin, expr)) in expressions().iter().enumerate() {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{origin}: `{expr}` selects no metric");
        for name in names {
            assert!(known(&name), "{origin}: `{expr}` uses `{name}`, which Vigil does not export");
        }
        // Grafana's interval variables are not PromQL; promtool parses the rest.
        let expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h");
        rules.push_str(&format!(
            "      - record: check:expression_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("expressions.yml");
    std::fs::write(&file, rules).unwrap();
    let (ok, text) = tool("promtool", &["check", "rules", file.to_str().unwrap()]);
    assert!(ok, "{text}");
    // And the tokenizer is not blind: a misspelt metric is caught.
    assert!(!known(&metric_names("sum(rate(vigil_event_consumed_total[5m]))")[0]));
}

/// A real Alertmanager with the example config.
fn alertmanager(port: u16, dir: &Path) -> Running {
    support::alertmanager(port, dir, Path::new("deploy/alertmanager/alertmanager.yml"))
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_violation_reaches_alertmanager_even_when_it_starts_late() {
    use vigil::alerts::{Alert, AlertConfig, Alerts};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics = vigil::metrics::Metrics::new();
    let config =
        AlertConfig { url: format!("http://127.0.0.1:{port}"), resolve_after: Duration::from_secs(86_400), queue: 10 };
    let alerts = Alerts::start(&config, metrics.clone());
    let now = vigil::pipeline::wall_ms();
    let violation = vigil::violation::Violation {
        id: vigil::violation::violation_id("SOD-02", "deploy-77"),
        control_id: "SOD-02".into(),
        control_version: "1".into(),
        severity: "critical".into(),
        title: "Deployer authored the deployed change".into(),
        service: "payments".into(),
        subject: "deploy-77".into(),
        event_time: now - 3_600_000,
        detected_at: now,
        late: false,
        message: "carol deployed a commit she authored".into(),
        evidence: vec!["d-77@deploy/0/12".into(), "pr-42@ci/1/7".into()],
        frameworks: vec![],
        status: "open".into(),
    };
    // Alertmanager is not up yet: the post fails and is retried.
    alerts.push(Alert::of(&violation, "Roll back and redeploy by someone else.", config.resolve_after, now));
    wait_for("a failed post", Duration::from_secs(10), || (metrics.alert_send_failures.get() > 0).then_some(()));
    let _am = alertmanager(port, dir.path());
    let alert =
        wait_for("the alert in Alertmanager", Duration::from_secs(60), || alerts_in(port).remove(&violation.id));
    assert_eq!(alert["labels"]["alertname"], "VigilViolation");
    assert_eq!(alert["labels"]["control_id"], "SOD-02");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["service"], "payments");
    assert_eq!(alert["annotations"]["remediation"], "Roll back and redeploy by someone else.");
    assert_eq!(alert["annotations"]["evidence"], "d-77@deploy/0/12 pr-42@ci/1/7");
    assert_eq!(alert["receivers"][0]["name"], "oncall", "critical violations page on-call");
    let starts = chrono::DateTime::parse_from_rfc3339(alert["startsAt"].as_str().unwrap()).unwrap();
    assert_eq!(starts.timestamp_millis(), violation.event_time);
    assert!(alert["endsAt"].as_str().unwrap() > alert["startsAt"].as_str().unwrap());
    assert_eq!(metrics.alerts_sent.get(), 1);
    assert_eq!(metrics.alerts_queued.get(), 0);
}

/// The acceptance: a finished `vigil demo --serve` keeps serving metrics
/// that promtool accepts; with --alertmanager-url every violation found is
/// an alert in a real Alertmanager.
#[test]
fn a_finished_demo_serves_clean_metrics_and_pushed_every_violation() {
    let dir = tempfile::tempdir().unwrap();
    let (metrics_port, am_port) = (free_port(), free_port());
    let _am = alertmanager(am_port, dir.path());
    wait_for("Alertmanager", Duration::from_secs(30), || {
        ureq::get(&format!("http://127.0.0.1:{am_port}/-/ready")).call().ok().map(|_| ())
    });
    let mut demo = Command::new(VIGIL)
        .args(["demo", "--events", "5000", "--seed", "3", "--serve", "--quiet"])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
        .args(["--alertmanager-url", &format!("http://127.0.0.1:{am_port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(demo.stdout.take().unwrap());
    let stderr = BufReader::new(demo.stderr.take().unwrap());
    let _demo = Running(demo);
    let summary = std::thread::spawn(move || stdout.lines().map_while(Result::ok).collect::<Vec<_>>().join("\n"));
    let mut log = String::new();
    for line in stderr.lines().map_while(Result::ok) {
        log.push_str(&line);
        log.push('\n');
        if line.contains("serving http://") {
            break;
        }
    }
    assert!(log.contains("serving http://"), "the demo did not finish and serve:\n{log}");
    let text = scrape(metrics_port);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool: install Debian's prometheus (tests/run.sh does)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    let complaints = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && complaints.trim().is_empty(), "promtool check metrics:\n{complaints}");
    for name in ["vigil_build_info", "vigil_events_consumed_total", "vigil_violations_total", "vigil_watermark_seconds"]
    {
        assert!(text.lines().any(|l| l.starts_with(name)), "{name} missing from /metrics");
    }
    let found = vigil::metrics::sample_sum(&text, "vigil_violations_total") as usize;
    assert!(found > 0);
    let sent = wait_for("every alert", Duration::from_secs(60), || {
        let n = alerts_in(am_port).len();
        (n == found).then_some(n)
    });
    assert_eq!(vigil::metrics::sample_sum(&scrape(metrics_port), "vigil_alerts_sent_total") as usize, sent);
    drop(_demo);
    let summary = summary.join().unwrap();
    assert!(summary.contains(&format!("found={found}")), "{summary}");
}

/// deploy/: the Kubernetes manifests, compose file and Dockerfile hang
/// together (tests/deploy_check.py), and every Vigil config in them passes
/// `vigil check`.
#[test]
fn the_deploy_manifests_hang_together_and_their_configs_check() {
    let out = Command::new("python3").arg("tests/deploy_check.py").output().expect("python3");
    assert!(
        out.status.success(),
        "{}{} (PyYAML missing? tests/run.sh installs it)",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let configs = String::from_utf8(out.stdout).unwrap();
    assert_eq!(configs.lines().count(), 3);
    for config in configs.lines() {
        // The Kubernetes config reads its controls from the mounted ConfigMap,
        // which is made from queries/.
        let out = Command::new(VIGIL).args(["check", "--config", config, "--queries", "queries"]).output().unwrap();
        assert!(out.status.success(), "{config}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
