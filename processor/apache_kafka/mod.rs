//! Apache Kafka in processes of its own, for the broker-level tests, the
//! drills and `vigil bench`: the reference broker every guarantee is tested
//! against.
//!
//! [`Distribution`] finds the broker's jars (fetched once by Maven from
//! `tests/kafka/pom.xml` into a cache outside the clone); [`Cluster`] formats
//! KRaft storage and starts combined broker+controller nodes on free
//! loopback ports — one node for most tests, three with replication factor 3
//! and `min.insync.replicas=2` for the failover drills — and can kill, stop
//! and restart each node on its own log directory. Every node logs to a file
//! in the cluster's directory; a cluster dropped while its thread panics
//! prints the tail of each log and keeps the directory. Dropping a cluster
//! kills its nodes, and a node dies with the thread that started it
//! (`PR_SET_PDEATHSIG`), so a killed test leaves no broker behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

mod distribution;
mod secure;
pub use distribution::Distribution;
pub use secure::Tls;

/// How long a node may take to answer once started (a cold JVM on two busy
/// cores takes ~10 s).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// What a cluster is made of.
#[derive(Debug, Clone)]
pub struct Layout {
    pub nodes: usize,
    /// Broker properties added to (and overriding) the defaults.
    pub properties: Vec<(String, String)>,
    /// SCRAM-SHA-512 users (name, password): when any, each node also
    /// listens for SASL_SSL and authorizes by ACL (see [`Tls`]).
    pub sasl_users: Vec<(String, String)>,
}

impl Layout {
    /// One combined broker+controller: fast, for most tests.
    pub fn single() -> Layout {
        Layout { nodes: 1, properties: Vec::new(), sasl_users: Vec::new() }
    }

    /// Three combined nodes, replication factor 3, `min.insync.replicas=2`.
    pub fn three() -> Layout {
        Layout { nodes: 3, properties: Vec::new(), sasl_users: Vec::new() }
    }

    pub fn with(mut self, key: &str, value: &str) -> Layout {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// A SASL_SSL listener with these SCRAM-SHA-512 users, and ACLs.
    pub fn with_sasl_ssl(mut self, users: &[(&str, &str)]) -> Layout {
        self.sasl_users = users.iter().map(|(n, p)| (n.to_string(), p.to_string())).collect();
        self
    }

    fn replication(&self) -> usize {
        self.nodes.min(3)
    }
}

struct Node {
    id: u32,
    port: u16,
    controller_port: u16,
    /// The SASL_SSL listener's, when the cluster has one.
    sasl_port: u16,
    dir: PathBuf,
    process: Option<Child>,
}

impl Node {
    fn log(&self) -> PathBuf {
        self.dir.join("kafka.log")
    }
}

/// A running Apache Kafka cluster of [`Layout::nodes`] KRaft nodes.
pub struct Cluster {
    dist: Distribution,
    root: PathBuf,
    layout: Layout,
    nodes: Vec<Node>,
    tls: Option<Tls>,
}

impl Cluster {
    /// Formats storage for every node and starts them all; returns once each
    /// answers a metadata request that lists every node.
    pub fn start(layout: Layout) -> anyhow::Result<Cluster> {
        let dist = Distribution::locate()?;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("vigil-kafka-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("log4j2.properties"), LOG4J2)?;
        let nodes = (1..=layout.nodes as u32)
            .map(|id| Node {
                id,
                port: free_port(),
                controller_port: free_port(),
                sasl_port: free_port(),
                dir: root.join(format!("node-{id}")),
                process: None,
            })
            .collect();
        let tls = if layout.sasl_users.is_empty() { None } else { Some(Tls::make(&root.join("tls"))?) };
        let mut cluster = Cluster { dist, root, layout, nodes, tls };
        let cluster_id = cluster.random_uuid()?;
        for i in 0..cluster.nodes.len() {
            cluster.format(i, &cluster_id)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_ready(i, cluster.nodes.len())?;
        }
        Ok(cluster)
    }

    /// `kafka-4.1.1`.
    pub fn label(&self) -> String {
        self.dist.label()
    }

    /// Where the cluster keeps its nodes' logs and data.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Every node's client address, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect::<Vec<_>>().join(",")
    }

    /// Every node's SASL_SSL address, when the layout asked for one.
    pub fn sasl_bootstrap(&self) -> Option<String> {
        self.tls.as_ref()?;
        Some(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.sasl_port)).collect::<Vec<_>>().join(","))
    }

    /// The certificate authorities of a secured cluster.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// Runs Kafka's ACL tool (`kafka-acls`) as the super user with `args`
    /// (e.g. `--add --allow-principal User:vigil --operation Read --topic change`).
    pub fn acls(&self, args: &[&str]) -> anyhow::Result<()> {
        let out = self
            .dist
            .java()
            .args(["org.apache.kafka.tools.AclCommand", "--bootstrap-server", &self.live_bootstrap()])
            .args(args)
            .output()
            .context("running kafka-acls")?;
        if !out.status.success() {
            bail!(
                "kafka-acls {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    pub fn node_ids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Creates `name` with `partitions` partitions, replicated on up to
    /// three nodes.
    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        self.create_topics(&[(name, partitions)])
    }

    pub fn create_topics(&self, topics: &[(&str, i32)]) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create().context("admin client")?;
        let replication = self.layout.replication() as i32;
        let new: Vec<NewTopic> =
            topics.iter().map(|(name, p)| NewTopic::new(name, *p, TopicReplication::Fixed(replication))).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in futures::executor::block_on(admin.create_topics(&new, &options))? {
            result.map_err(|(topic, e)| anyhow::anyhow!("creating topic {topic}: {e}"))?;
        }
        Ok(())
    }

    /// The four inputs, violations and evidence with `partitions` each, the
    /// dead-letter topic with one.
    pub fn create_vigil_topics(&self, partitions: i32) -> anyhow::Result<()> {
        let mut topics: Vec<(&str, i32)> = ["change", "ci", "access", "deploy", "vigil-violations", "vigil-evidence"]
            .into_iter()
            .map(|t| (t, partitions))
            .collect();
        topics.push(("vigil-dead-letter", 1));
        self.create_topics(&topics)
    }

    /// How many partitions of `topics` each node leads, by node id.
    pub fn leaders(&self, topics: &[&str]) -> anyhow::Result<std::collections::BTreeMap<u32, usize>> {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", self.live_bootstrap()).create().context("metadata client")?;
        let mut led = std::collections::BTreeMap::new();
        for topic in topics {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
            for t in metadata.topics() {
                for p in t.partitions() {
                    if p.leader() >= 0 {
                        *led.entry(p.leader() as u32).or_default() += 1;
                    }
                }
            }
        }
        Ok(led)
    }

    /// SIGKILL node `id`: gone at once, its log directory kept.
    pub fn kill(&mut self, id: u32) {
        let node = self.node_mut(id);
        if let Some(mut child) = node.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM node `id` and wait for its controlled shutdown.
    pub fn stop(&mut self, id: u32) -> anyhow::Result<()> {
        let node = self.node_mut(id);
        let Some(mut child) = node.process.take() else { return Ok(()) };
        // SAFETY: kill(2) on a child this process started and has not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("kafka node {id} did not stop within 60 s of SIGTERM; killed");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Starts node `id` again on its log directory.
    pub fn restart(&mut self, id: u32) -> anyhow::Result<()> {
        let i = self.index(id);
        if self.nodes[i].process.is_none() {
            self.spawn(i)?;
        }
        self.wait_ready(i, 1)
    }

    /// The last `lines` lines of every node's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(node.log()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("---- kafka node {} ({})\n", node.id, node.log().display()));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn live_bootstrap(&self) -> String {
        let live: Vec<String> =
            self.nodes.iter().filter(|n| n.process.is_some()).map(|n| format!("127.0.0.1:{}", n.port)).collect();
        live.join(",")
    }

    fn index(&self, id: u32) -> usize {
        self.nodes.iter().position(|n| n.id == id).unwrap_or_else(|| panic!("no kafka node {id}"))
    }

    fn node_mut(&mut self, id: u32) -> &mut Node {
        let i = self.index(id);
        &mut self.nodes[i]
    }

    fn random_uuid(&self) -> anyhow::Result<String> {
        let out = self.dist.java().arg("kafka.tools.StorageTool").arg("random-uuid").stderr(Stdio::null()).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.lines().map(str::trim).rfind(|l| l.len() == 22).map(str::to_owned);
        id.with_context(|| format!("kafka-storage random-uuid printed no id: {text}"))
    }

    fn properties(&self, node: &Node) -> String {
        let voters: Vec<String> =
            self.nodes.iter().map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port)).collect();
        let rf = self.layout.replication();
        let min_isr = if rf >= 3 { 2 } else { 1 };
        let (mut listeners, mut advertised) =
            (format!("PLAINTEXT://127.0.0.1:{}", node.port), format!("PLAINTEXT://127.0.0.1:{}", node.port));
        let mut protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT".to_string();
        if self.tls.is_some() {
            let sasl = format!(",SASL_SSL://127.0.0.1:{}", node.sasl_port);
            listeners.push_str(&sasl);
            advertised.push_str(&sasl);
            protocols.push_str(",SASL_SSL:SASL_SSL");
        }
        let mut text = format!(
            "process.roles=broker,controller\n\
             node.id={id}\n\
             controller.quorum.voters={voters}\n\
             listeners={listeners},CONTROLLER://127.0.0.1:{cport}\n\
             advertised.listeners={advertised}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map={protocols}\n\
             log.dirs={data}\n\
             num.partitions=1\n\
             default.replication.factor={rf}\n\
             min.insync.replicas={min_isr}\n\
             offsets.topic.replication.factor={rf}\n\
             offsets.topic.num.partitions=3\n\
             transaction.state.log.replication.factor={rf}\n\
             transaction.state.log.min.isr={min_isr}\n\
             group.initial.rebalance.delay.ms=0\n\
             share.coordinator.state.topic.replication.factor={rf}\n\
             share.coordinator.state.topic.min.isr={min_isr}\n",
            id = node.id,
            voters = voters.join(","),
            cport = node.controller_port,
            data = node.dir.join("data").display(),
        );
        if let Some(tls) = &self.tls {
            text.push_str(&tls.properties());
        }
        for (k, v) in &self.layout.properties {
            text.push_str(&format!("{k}={v}\n"));
        }
        text
    }

    fn format(&self, i: usize, cluster_id: &str) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        std::fs::create_dir_all(&node.dir)?;
        let props = node.dir.join("server.properties");
        std::fs::write(&props, self.properties(node))?;
        let out = self
            .dist
            .java()
            .args(["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c"])
            .arg(&props)
            .args(secure::scram_args(&self.layout.sasl_users))
            .output()
            .context("running kafka-storage format")?;
        if !out.status.success() {
            bail!(
                "kafka-storage format for node {} failed: {}{}",
                node.id,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let log4j = self.root.join("log4j2.properties");
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.log())?;
        let mut command = self.dist.java();
        command
            .args(["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true"])
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg("kafka.Kafka")
            .arg(node.dir.join("server.properties"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut command);
        node.process = Some(command.spawn().context("starting java (Kafka needs Java 17 or later)")?);
        Ok(())
    }

    /// Waits until node `i` answers a metadata request listing at least
    /// `brokers` brokers, itself among them.
    fn wait_ready(&mut self, i: usize, brokers: usize) -> anyhow::Result<()> {
        let (id, port) = (self.nodes[i].id, self.nodes[i].port);
        let deadline = Instant::now() + START_TIMEOUT;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", format!("127.0.0.1:{port}"))
            .set("log_level", "0")
            .create()
            .context("metadata client")?;
        loop {
            if let Some(child) = self.nodes[i].process.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.nodes[i].process = None;
                    bail!("kafka node {id} exited ({status}) while starting:\n{}", self.log_tail(40));
                }
            }
            let answered = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && consumer
                    .fetch_metadata(None, Duration::from_secs(2))
                    .is_ok_and(|m| m.brokers().len() >= brokers && m.brokers().iter().any(|b| b.id() as u32 == id));
            if answered {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("kafka node {id} did not answer on port {port} within {START_TIMEOUT:?}:\n{}", self.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.process.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(30));
            eprintln!("kafka: logs and data kept in {}", self.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// The node is killed when the thread that started it ends, so a test
/// process killed mid-run leaves no broker holding ports and memory.
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// The broker's log: INFO, without the per-partition state-change chatter.
const LOG4J2: &str = "\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = warn
";
