//! Vigil against a secured Apache Kafka: a SASL_SSL listener (SCRAM-SHA-512
//! over TLS, a CA made for the test with openssl) and the standard
//! authorizer, Vigil's principal granted its inputs to read and its outputs
//! to write, nothing else. With a wrong password, or trusting a CA that
//! signed nothing the broker presents, it stays not ready, publishes and
//! commits nothing, and says why once; with the right credentials its
//! output equals the ground truth.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{compare, free_port, generate, kafka, scrape, start_vigil, wait_for_output, write_config, Layout};

const USER: &str = "vigil";
const PASSWORD: &str = "right-horse-battery";
const GROUP: &str = "vigil-secure";
/// A principal granted the inputs and the group, not the outputs.
const NARROW: &str = "narrow";

#[test]
fn vigil_runs_on_sasl_ssl_with_acls_and_refuses_bad_credentials_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let broker = kafka(Layout::single().with_sasl_ssl(&[(USER, PASSWORD), (NARROW, PASSWORD)]), 3);
    grant(&broker, USER, true);
    grant(&broker, NARROW, false);
    let expected = generate(&broker.bootstrap(), 5_000, 41, dir.path());
    let secure = broker.sasl_bootstrap().unwrap();
    let tls = broker.tls().unwrap().clone();

    for (case, password, ca) in [("wrong-password", "wrong", &tls.ca), ("untrusted-ca", PASSWORD, &tls.other_ca)] {
        let port = free_port();
        let config = secure_config(dir.path(), &secure, case, port, password, ca);
        let log = dir.path().join(format!("{case}.log"));
        let vigil = start_vigil(&config, &log);
        let started = Instant::now();
        let mut ready = None;
        while started.elapsed() < Duration::from_secs(20) {
            let metrics = scrape(port);
            if ready.is_none() && support::is_ready(&metrics) {
                ready = Some(
                    metrics
                        .lines()
                        .filter(|l| l.contains("assigned") || l.contains("ready"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        drop(vigil);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(ready.is_none(), "{case}: ready without access: {ready:?}; log:\n{text}");
        let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR") || l.contains("WARN")).collect();
        let cause = if case == "wrong-password" { "Authentication failed" } else { "certificate verify failed" };
        let clear: Vec<&&str> = errors.iter().filter(|l| l.contains(cause) && l.contains("127.0.0.1")).collect();
        assert!(!clear.is_empty(), "{case}: no error naming the broker and `{cause}`; log:\n{text}");
        assert!(errors.len() <= 6, "{case}: {} warnings/errors in 20 s, a flood; log:\n{text}", errors.len());
        let check = std::process::Command::new(support::VIGIL)
            .args(["check", "--connect", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&check.stderr).to_string() + &String::from_utf8_lossy(&check.stdout);
        assert_eq!(check.status.code(), Some(1), "{case}: vigil check --connect: {said}");
        assert!(said.contains(cause), "{case}: vigil check --connect does not say `{cause}`: {said}");
        assert_eq!(committed(&broker.bootstrap(), &format!("{GROUP}-{case}")), 0, "{case}: offsets committed");
        let cause_text = plain(clear[0]);
        let cause_text = cause_text.split("error=").nth(1).unwrap_or(&cause_text);
        support::summary(format_args!(
            "security: {case} refused: ready=0 committed=0 warnings={} \"{}\"",
            errors.len(),
            cause_text.chars().take(160).collect::<String>()
        ));
    }
    // A principal without its output topics' ACLs: named, topic by topic.
    let config = secure_config(dir.path(), &secure, "narrow", free_port(), PASSWORD, &tls.ca);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"sasl.username\" = \"vigil\"", "\"sasl.username\" = \"narrow\"");
    std::fs::write(&config, text).unwrap();
    let check = std::process::Command::new(support::VIGIL)
        .args(["check", "--connect", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stderr).to_string();
    assert_eq!(check.status.code(), Some(1), "narrow: vigil check --connect: {said}");
    for topic in ["vigil-violations", "vigil-evidence", "vigil-dead-letter"] {
        assert!(said.contains(&format!("topic {topic}: ")), "narrow: {topic} not named: {said}");
    }
    assert!(!said.contains("topic change: "), "narrow: an input it may read reported: {said}");
    support::summary(format_args!("security: missing ACLs named: {}", said.lines().next().unwrap_or_default()));

    // Nothing of the refused runs reached the outputs.
    assert!(support::violations(&broker.bootstrap()).is_empty(), "violations published without access");

    let port = free_port();
    let config = secure_config(dir.path(), &secure, "granted", port, PASSWORD, &tls.ca);
    let log = dir.path().join("granted.log");
    let _vigil = start_vigil(&config, &log);
    let found = wait_for_output(&broker.bootstrap(), &expected, Duration::from_secs(5), Duration::from_secs(180));
    let outcome = compare(&expected, &found);
    support::summary(format_args!(
        "security: broker={} sasl=SCRAM-SHA-512 tls=yes acls=yes missing={} unexpected={} duplicates={}",
        broker.label(),
        outcome.missing,
        outcome.unexpected,
        outcome.duplicates
    ));
    assert_eq!(outcome, support::Outcome::default(), "log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
}

/// Vigil's principal reads its inputs and its outputs (it reads the
/// violations, evidence and dead-letter topics on at start), writes its
/// outputs, and uses its groups; nothing else.
fn grant(broker: &support::Cluster, user: &str, outputs_too: bool) {
    let principal = format!("User:{user}");
    fn topics(names: &[&'static str]) -> Vec<&'static str> {
        names.iter().flat_map(|t| ["--topic", *t]).collect()
    }
    let inputs = topics(&["change", "ci", "access", "deploy"]);
    let outputs = topics(&["vigil-violations", "vigil-evidence", "vigil-dead-letter"]);
    let add = ["--add", "--allow-principal", &principal];
    let mut grants: Vec<Vec<&str>> = vec![
        [&add[..], &["--operation", "Read", "--operation", "Describe"], &inputs].concat(),
        [&add[..], &["--operation", "Read", "--group", GROUP, "--resource-pattern-type", "prefixed"]].concat(),
    ];
    if outputs_too {
        grants.push(
            [&add[..], &["--operation", "Read", "--operation", "Describe", "--operation", "Write"], &outputs].concat(),
        );
    }
    for args in grants {
        broker.acls(&args).unwrap_or_else(|e| panic!("{e:#}"));
    }
}

/// [`write_config`] for the SASL_SSL listener with these credentials.
fn secure_config(dir: &Path, bootstrap: &str, case: &str, port: u16, password: &str, ca: &Path) -> PathBuf {
    let path = write_config(dir, bootstrap, &format!("{GROUP}-{case}"), port);
    let text = std::fs::read_to_string(&path).unwrap();
    let properties = format!(
        "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\
         \"sasl.username\" = \"{USER}\"\n\"sasl.password\" = \"{password}\"\n\"ssl.ca.location\" = \"{}\"\n\n",
        ca.display()
    );
    let text = text.replacen("[kafka.consumer_properties]", &format!("{properties}[kafka.consumer_properties]"), 1);
    std::fs::write(&path, text).unwrap();
    path
}

/// How many input partitions group `group` has an offset committed for.
fn committed(bootstrap: &str, group: &str) -> usize {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).set("group.id", group).create().unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    for topic in ["change", "ci", "access", "deploy"] {
        for p in 0..3 {
            list.add_partition(topic, p);
        }
    }
    // The group's coordinator may still be loading: ask again.
    let mut tries = 0;
    let offsets = loop {
        match consumer.committed_offsets(list.clone(), Duration::from_secs(10)) {
            Ok(offsets) => break offsets,
            Err(e) if tries < 20 => {
                tries += 1;
                eprintln!("committed offsets of {group}: {e}; asking again");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => panic!("committed offsets of {group}: {e}"),
        }
    };
    offsets.elements().iter().filter(|e| e.offset() != rdkafka::Offset::Invalid).count()
}

/// A log line without its terminal colours.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut parts = line.split('\u{1b}');
    out.push_str(parts.next().unwrap_or_default());
    for part in parts {
        out.push_str(part.split_once('m').map_or("", |(_, rest)| rest));
    }
    out
}
