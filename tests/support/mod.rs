//! What the process-level tests share: free ports, child processes that die
//! with the test, a tansu broker in its own process, configs, and reading
//! the violations topic back.
#![allow(dead_code)] // each test target uses a different part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the child (SIGKILL) when dropped, pass or fail.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vigil run --config <config>`, its log in `log`.
pub fn start_vigil(config: &Path, log: &Path) -> Running {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Running(
        Command::new(VIGIL)
            .args(["run", "--config"])
            .arg(config)
            .env("VIGIL_LOG", "warn,vigil=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// The tansu binary: $TANSU, then PATH, then ~/.cargo/bin.
fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TANSU") {
        return path.into();
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("tansu")).find(|p| p.exists()))
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu"));
    on_path.or(home.filter(|p| p.exists())).unwrap_or_else(|| {
        panic!("tansu not found: install it with `cargo install tansu --features dynostore` (tests/run.sh does)")
    })
}

/// A tansu broker (memory storage) in its own process. `advertised` is
/// where clients are told to connect (a proxy's port, or the broker's own).
pub struct Tansu {
    pub port: u16,
    pub advertised: u16,
    process: Running,
}

impl Tansu {
    pub fn start() -> Tansu {
        let port = free_port();
        Tansu::start_advertising(port, port)
    }

    pub fn start_advertising(port: u16, advertised: u16) -> Tansu {
        let child = Command::new(tansu_binary())
            .args(["broker", "--storage-engine", "memory://tansu/"])
            .arg("--listener-url")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .arg("--advertised-listener-url")
            .arg(format!("tcp://127.0.0.1:{advertised}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not start listening on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu { port, advertised, process: Running(child) }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.advertised)
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu_binary())
            .args(["topic", "create", name, "--partitions", &partitions.to_string(), "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "tansu topic create {name}");
    }

    /// The four inputs and the violations topic with `partitions` each, the
    /// dead-letter topic with one.
    pub fn create_vigil_topics(&self, partitions: u32) {
        for topic in ["change", "ci", "access", "deploy", "vigil-violations", "vigil-evidence"] {
            self.create_topic(topic, partitions);
        }
        self.create_topic("vigil-dead-letter", 1);
    }
}

/// A config for `vigil run` against `bootstrap`, with the generated
/// organisation's identity map and short timeouts for tests.
/// Producer settings that keep every record at the start of a stored batch.
const ONE_RECORD_PER_BATCH: &str = "[kafka.producer_properties]\n\"batch.num.messages\" = \"1\"\n";

/// Vigil's outputs too go one record per batch: an instance reads the
/// violations and evidence topics on from where it stopped, which is
/// mid-batch for tansu as soon as a producer batches (see [`generate`]).
pub fn write_config(dir: &Path, bootstrap: &str, group: &str, metrics_port: u16) -> PathBuf {
    let path = dir.join(format!("{group}-{metrics_port}.toml"));
    let text = format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"{group}\"\n\n\
         [kafka.consumer_properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n\n\
         {ONE_RECORD_PER_BATCH}\n\
         [time]\ntick = \"200ms\"\nidle_timeout = \"1s\"\n\n\
         [metrics]\naddr = \"127.0.0.1:{metrics_port}\"\n\n{}",
        vigil::generate::identities_toml()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// `vigil generate` into the broker; returns the expected violation ids.
///
/// One record per producer batch: tansu (0.6) answers a fetch from an offset
/// inside a stored batch with the batches that start after it — nothing at
/// all inside the partition's last batch — where Kafka returns the batch
/// holding the offset. Vigil commits whatever offset its state still needs,
/// so a restarted or rebalanced instance would fetch mid-batch and skip
/// records, or wait forever for them.
pub fn generate(bootstrap: &str, events: usize, seed: u64, dir: &Path) -> Vec<String> {
    let truth_path = dir.join("truth.json");
    let config = dir.join("generate.toml");
    std::fs::write(&config, ONE_RECORD_PER_BATCH).unwrap();
    let status = Command::new(VIGIL)
        .args(["generate", "--events", &events.to_string(), "--seed", &seed.to_string(), "--brokers", bootstrap])
        .arg("--config")
        .arg(&config)
        .arg("--truth")
        .arg(&truth_path)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "vigil generate");
    let truth: vigil::generate::Truth = serde_json::from_str(&std::fs::read_to_string(&truth_path).unwrap()).unwrap();
    truth.violations.into_iter().map(|v| v.id).collect()
}

/// What is on the violations topic: payloads per id, in order.
pub fn violations(bootstrap: &str) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for r in vigil::embedded::read_all(bootstrap, "vigil-violations", Duration::from_secs(60)).unwrap() {
        let id = String::from_utf8(r.key.unwrap_or_default()).unwrap();
        out.entry(id).or_default().push(r.payload.unwrap_or_default());
    }
    out
}

/// GETs /metrics, or an empty text while the endpoint is down.
pub fn scrape(port: u16) -> String {
    ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .unwrap_or_default()
}

/// How the output compares with the truth.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub missing: usize,
    pub unexpected: usize,
    /// Records beyond the first per id.
    pub duplicates: usize,
    /// Ids published more than once with different content.
    pub conflicting: usize,
}

pub fn compare(expected: &[String], found: &BTreeMap<String, Vec<Vec<u8>>>) -> Outcome {
    let expected: std::collections::BTreeSet<&String> = expected.iter().collect();
    Outcome {
        missing: expected.iter().filter(|id| !found.contains_key(**id)).count(),
        unexpected: found.keys().filter(|id| !expected.contains(id)).count(),
        duplicates: found.values().map(|v| v.len() - 1).sum(),
        conflicting: found.values().filter(|v| v.iter().any(|p| p != &v[0])).count(),
    }
}

/// "control subject" of each unexpected violation, for failure messages.
pub fn describe_unexpected(expected: &[String], found: &BTreeMap<String, Vec<Vec<u8>>>) -> Vec<String> {
    let catalog = vigil::schema::Catalog::builtin().unwrap();
    found
        .iter()
        .filter(|(id, _)| !expected.contains(id))
        .map(|(_, payloads)| match vigil::violation::Violation::from_confluent_avro(&catalog.violation, &payloads[0]) {
            Ok(v) => format!("{} {} {}", v.control_id, v.subject, v.message),
            Err(e) => format!("undecodable: {e}"),
        })
        .collect()
}

/// Waits until every expected id is on the violations topic and nothing new
/// has arrived for `quiet`; returns what is there.
pub fn wait_for_output(
    bootstrap: &str,
    expected: &[String],
    quiet: Duration,
    timeout: Duration,
) -> BTreeMap<String, Vec<Vec<u8>>> {
    let deadline = Instant::now() + timeout;
    let mut last_count = usize::MAX;
    let mut stable_since = Instant::now();
    loop {
        let found = violations(bootstrap);
        let count: usize = found.values().map(Vec::len).sum();
        if count != last_count {
            last_count = count;
            stable_since = Instant::now();
        }
        let complete = expected.iter().all(|id| found.contains_key(id));
        if (complete && stable_since.elapsed() >= quiet) || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A TCP proxy in front of the broker that can be cut: while down, new
/// connections are refused and open ones are closed — to clients, the
/// broker is gone. The broker advertises the proxy's port.
pub struct Proxy {
    pub port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Proxy {
    pub fn start(port: u16, upstream: u16) -> Proxy {
        use std::sync::atomic::Ordering;
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::<std::net::TcpStream>::new()));
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || loop {
            if !up2.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            listener.set_nonblocking(true).unwrap();
            while up2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                        let mut guard = open2.lock().unwrap();
                        guard.push(client.try_clone().unwrap());
                        guard.push(server.try_clone().unwrap());
                        drop(guard);
                        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pipe(server, client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            drop(listener); // refuse connections while down
        });
        Proxy { port, up, open }
    }

    /// Cuts every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}
