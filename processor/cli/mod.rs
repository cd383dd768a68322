//! The command-line interface.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;

mod check;
mod decode;

use crate::config::Config;
use crate::controls::{builtin_sources, load_dir, ControlSource};
use crate::demo::{self, DemoOptions};
use crate::embedded::produce_all_with;
use crate::generate::{generate, records, to_json, Encoding, GenConfig};
use crate::metrics::{self, Metrics};
use crate::pipeline::{wall_ms, Pipeline};
use crate::schema::{Catalog, Topic};
use check::check;

#[derive(Parser, Debug)]
#[command(
    name = "vigil",
    version,
    about = "Streaming SOX-compliance processor: Kafka in, SQL controls over Arrow, violations out"
)]
pub struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the processor against a Kafka cluster.
    Run {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Directory of .sql controls; overrides controls.dir.
        #[arg(long)]
        queries: Option<PathBuf>,
        /// Static group membership: this instance's stable name (a
        /// StatefulSet pod's, say). Restarted under the same name within the
        /// session timeout it takes its partitions back with no rebalance,
        /// so no other instance replays anything; stopped, it keeps them
        /// until the session timeout expires. Letters, digits, `.`, `_`, `-`.
        #[arg(long, value_name = "NAME", value_parser = instance_id)]
        instance_id: Option<String>,
    },
    /// Write a synthetic event stream and its ground truth.
    Generate {
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Days of event time the stream spans (it ends two days ago).
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Produce to this Kafka cluster (topics named by --config, or change, ci, access, deploy).
        #[arg(long, conflicts_with = "out")]
        brokers: Option<String>,
        /// Config whose [topics] names the input topics.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Payload encoding when producing to Kafka.
        #[arg(long, value_enum, default_value_t = Encoding::Avro)]
        format: Encoding,
        /// Write <topic>.jsonl files, truth.json and identities.toml here instead.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where to write the ground truth (default: truth.json in --out, or stdout).
        #[arg(long)]
        truth: Option<PathBuf>,
        /// Also write the generated organisation's identity map (an
        /// [identities] table to append to the config) here.
        #[arg(long)]
        identities: Option<PathBuf>,
    },
    /// Run control test cases: DIR/*.sql against the fixtures in DIR/tests/*.toml.
    Test {
        /// Directory of controls with a tests/ subdirectory.
        #[arg(default_value = "queries")]
        dir: PathBuf,
    },
    /// Validate the config and every control against the schemas, without a broker.
    Check {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Directory of .sql controls (default: controls.dir, or the built-in catalogue).
        #[arg(long)]
        queries: Option<PathBuf>,
        /// Also connect to the config's brokers: they must answer, accept
        /// its credentials and let it see its topics and use its group.
        #[arg(long, requires = "config")]
        connect: bool,
    },
    /// Print the canonical events (one JSON line each) that tool-native
    /// payload files map to: the tool for wiring a new source.
    Decode {
        /// json, auto (tell a tool's format by its shape), github, cdevents,
        /// jira, servicenow, okta, argocd or kubernetes-audit.
        #[arg(long, default_value = "auto")]
        format: crate::decode::Format,
        /// change, ci, access or deploy.
        #[arg(long, value_parser = parse_topic)]
        topic: Topic,
        /// A Kafka record header NAME=VALUE the payload arrives with (e.g.
        /// ce_type=… for a binary-mode CloudEvent); repeatable.
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, Option<Vec<u8>>)>,
        /// Config whose [native] section says what tools' events mean.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check the evidence hash chains of an archive (or of the evidence
    /// topic); exit 1 naming every modified, missing, reordered or inserted record.
    Verify {
        #[arg(long, required_unless_present = "brokers")]
        archive: Option<PathBuf>,
        /// Check the evidence topic on these brokers instead.
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, default_value = "vigil-evidence")]
        topic: String,
    },
    /// Append what is new on the evidence and violations topics to a Parquet
    /// archive (run it on a schedule; each record is archived once).
    Archive {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        archive: PathBuf,
    },
    /// Run SQL over an archive: tables `evidence` and `violations` (each
    /// with a `date` column from its partition folders).
    Query {
        sql: String,
        #[arg(long)]
        archive: PathBuf,
    },
    /// Write an audit report of a period from an archive: report.html (figures,
    /// charts, every deploy traced), report.json, deploys.csv, violations.csv.
    Report {
        /// First day, YYYY-MM-DD.
        #[arg(long, value_parser = crate::report::parse_date)]
        from: chrono::NaiveDate,
        /// Last day (inclusive), YYYY-MM-DD.
        #[arg(long, value_parser = crate::report::parse_date)]
        to: chrono::NaiveDate,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        archive: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the controls reference (Markdown) generated from the control headers.
    Docs {
        /// Directory of .sql controls (default: the built-in catalogue).
        #[arg(long)]
        queries: Option<PathBuf>,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Measure the performance targets (core throughput, evaluation cost
    /// against retained state, memory per retained event) in one run.
    Bench(crate::bench::BenchArgs),
    /// Re-evaluate a past period from files (JSON lines, Avro container
    /// files, Parquet) at full speed; violations as JSON lines.
    Replay(crate::replay::ReplayArgs),
    /// Run everything in one process: an embedded broker, a generated stream
    /// and the processor, then compare with the ground truth.
    Demo {
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Write the summary as JSON here.
        #[arg(long)]
        summary_json: Option<PathBuf>,
        /// Undecodable records to mix in (they must reach the dead-letter topic).
        #[arg(long, default_value_t = 5)]
        bad_records: usize,
        #[arg(long, value_enum, default_value_t = Encoding::Avro)]
        format: Encoding,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Serve /metrics (and /healthz, /readyz) here while the demo runs.
        #[arg(long)]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Keep serving --metrics-addr after the run until interrupted, so a
        /// person or Prometheus can look at the finished demo.
        #[arg(long, requires = "metrics_addr")]
        serve: bool,
        /// Push the violations to this Alertmanager (e.g. http://127.0.0.1:9093).
        #[arg(long)]
        alertmanager_url: Option<String>,
        /// Write the evidence records and violations to a Parquet archive in
        /// this directory (then try vigil verify, query and report on it).
        #[arg(long)]
        archive: Option<PathBuf>,
        /// Do not print violations as they are found.
        #[arg(long)]
        quiet: bool,
    },
}

/// Runs the parsed command; the binary's only job is to call this.
pub async fn main(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run { config, queries, instance_id } => run(config, queries, instance_id).await.map(|_| 0),
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Replay(args) => crate::replay::run(args).await,
        Command::Generate { events, seed, days, brokers, config, format, out, truth, identities } => {
            if let Some(path) = identities {
                std::fs::write(&path, crate::generate::identities_toml())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            generate_cmd(
                GenConfig { days, ..GenConfig::new(events, seed, wall_ms()) },
                brokers,
                config,
                format,
                out,
                truth,
            )
            .await
            .map(|_| 0)
        }
        Command::Test { dir } => {
            let report = crate::testing::run_dir(&dir).await.map_err(anyhow::Error::msg)?;
            print!("{}", report.render());
            Ok(if report.failed() == 0 { 0 } else { 1 })
        }
        Command::Check { config, queries, connect } => check(config, queries, connect).await,
        Command::Decode { format, topic, headers, config, files } => {
            decode::decode(format, topic, &headers, config, &files)
        }
        Command::Verify { archive, brokers, topic } => {
            let report = match (archive, brokers) {
                (Some(dir), _) => crate::audit::verify_archive(&dir)?,
                (None, Some(brokers)) => crate::audit::verify_topic(&brokers, &topic)?,
                (None, None) => anyhow::bail!("give --archive DIR or --brokers HOST:PORT"),
            };
            print!("{}", report.render());
            Ok(i32::from(!report.problems.is_empty()))
        }
        Command::Report { from, to, service, archive, out } => {
            if !crate::report::is_archive(&archive) {
                anyhow::bail!(
                    "{}: no evidence/ directory; vigil demo --archive DIR writes an archive",
                    archive.display()
                );
            }
            let options = crate::report::ReportOptions { archive, from, to, service, out };
            let (summary, files) = crate::report::run(&options)?;
            for f in files {
                println!("{}", f.display());
            }
            eprintln!(
                "report: {} deploys ({} compliant), {} violations",
                summary.deploys, summary.compliant_deploys, summary.violations
            );
            Ok(0)
        }
        Command::Archive { config, archive } => {
            let config = Config::load(&config).map_err(anyhow::Error::msg)?;
            let (evidence, violations) = crate::audit::archive_topics(
                &config.bootstrap_servers,
                &config.consumer_properties,
                &config.evidence_topic,
                &config.violations_topic,
                &archive,
            )?;
            eprintln!(
                "archive: {evidence} evidence records and {violations} violations appended to {}",
                archive.display()
            );
            Ok(0)
        }
        Command::Query { sql, archive } => {
            println!("{}", crate::audit::query(&archive, &sql).await?);
            Ok(0)
        }
        Command::Docs { queries, out } => {
            let text = crate::controls::reference(&sources(queries.as_ref())?).map_err(anyhow::Error::msg)?;
            match out {
                Some(path) => std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?,
                None => print!("{text}"),
            }
            Ok(0)
        }
        Command::Demo {
            events,
            seed,
            summary_json,
            bad_records,
            format,
            partitions,
            metrics_addr,
            serve,
            alertmanager_url,
            archive,
            quiet,
        } => {
            let options = DemoOptions {
                events,
                seed,
                bad_records,
                encoding: format,
                partitions,
                print: !quiet,
                metrics_addr,
                alertmanager_url,
                archive,
                timeout: Duration::from_secs(600),
            };
            let summary = demo::run(options).await?;
            demo::print_summary(&summary);
            if let Some(path) = summary_json {
                let text = serde_json::to_string_pretty(&summary)?;
                std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
            }
            if let (true, Some(addr)) = (serve, metrics_addr) {
                eprintln!("demo: serving http://{addr}/metrics until interrupted (Ctrl-C)");
                stop_signal().await;
            }
            Ok(if summary.exact() { 0 } else { 1 })
        }
    }
}

/// The controls in `dir`, or the built-in catalogue.
pub(crate) fn sources(dir: Option<&PathBuf>) -> anyhow::Result<Vec<ControlSource>> {
    match dir {
        Some(dir) => load_dir(dir).map_err(anyhow::Error::msg),
        None => Ok(builtin_sources()),
    }
}

/// A `group.instance.id` Kafka accepts.
fn instance_id(text: &str) -> Result<String, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if text.is_empty() || text.len() > 249 || !text.chars().all(valid) {
        return Err("1 to 249 letters, digits, `.`, `_` or `-` (Kafka's rule for group.instance.id)".into());
    }
    Ok(text.to_string())
}

async fn run(config_path: PathBuf, queries: Option<PathBuf>, instance_id: Option<String>) -> anyhow::Result<()> {
    let mut config = Config::load(&config_path).map_err(anyhow::Error::msg)?;
    config.instance_id = instance_id;
    let sources = sources(queries.as_ref().or(config.controls_dir.as_ref()))?;
    let metrics = Metrics::new();
    if let Some(addr) = config.metrics_addr {
        let m = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, m).await {
                tracing::error!(%addr, error = %e, "metrics endpoint failed");
            }
        });
    }
    let is_static = config.instance_id.is_some();
    let pipeline = Pipeline::new(config, &sources, metrics).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        stop_signal().await;
        if is_static {
            tracing::info!(
                "stopping after the current tick; as a static member, keeping the partitions until the session timeout"
            );
        } else {
            tracing::info!("stopping after the current tick; leaving the consumer group");
        }
        let _ = stop_tx.send(true);
    });
    pipeline.run(stop_rx).await
}

async fn generate_cmd(
    gen: GenConfig,
    brokers: Option<String>,
    config: Option<PathBuf>,
    format: Encoding,
    out: Option<PathBuf>,
    truth_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    let catalog = Catalog::builtin().map_err(anyhow::Error::msg)?;
    let (stream, truth) = generate(&gen);
    let truth_json = serde_json::to_string_pretty(&truth)? + "\n";
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for topic in Topic::ALL {
            let path = dir.join(format!("{topic}.jsonl"));
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
            );
            for e in stream.iter().filter(|e| e.topic == topic) {
                file.write_all(&to_json(catalog.event(topic), &e.fields))?;
                file.write_all(b"\n")?;
            }
        }
        let path = truth_path.unwrap_or_else(|| dir.join("truth.json"));
        std::fs::write(&path, &truth_json).with_context(|| format!("writing {}", path.display()))?;
        // Its people have a name in each tool: `vigil replay DIR` finds the
        // map that ties them together here.
        let path = dir.join(crate::replay::IDENTITIES_FILE);
        std::fs::write(&path, crate::generate::identities_toml())
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "generate: {} events and {} expected violations in {}",
            stream.len(),
            truth.violations.len(),
            dir.display()
        );
        return Ok(());
    }
    let Some(brokers) = brokers else {
        anyhow::bail!("say where the stream goes: --brokers HOST:PORT or --out DIR");
    };
    let (topics, properties) = match &config {
        Some(path) => {
            let config = Config::load(path).map_err(anyhow::Error::msg)?;
            (config.input_topics, config.producer_properties)
        }
        None => (Topic::ALL.map(|t| t.name().to_string()), Default::default()),
    };
    let records = records(&catalog, &stream, format, &topics).map_err(anyhow::Error::msg)?;
    produce_all_with(&brokers, &records, &properties).await?;
    match truth_path {
        Some(path) => std::fs::write(&path, &truth_json).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{truth_json}"),
    }
    eprintln!(
        "generate: produced {} events to {brokers}; {} expected violations",
        stream.len(),
        truth.violations.len()
    );
    Ok(())
}

/// Ctrl-C, or SIGTERM (what Kubernetes and systemd send).
async fn stop_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn parse_header(text: &str) -> Result<(String, Option<Vec<u8>>), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    Ok((name.to_string(), Some(value.as_bytes().to_vec())))
}

fn parse_topic(name: &str) -> Result<Topic, String> {
    Topic::from_name(name).ok_or_else(|| format!("`{name}` is not a topic; use change, ci, access or deploy"))
}
