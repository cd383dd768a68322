//! A synthetic organisation's event stream, with its ground truth.
//!
//! The generator models services, engineers, pull requests, builds, tests,
//! scans, change requests, access grants and deploys over several days. Each
//! production deploy is a "story" of about a dozen events across the four
//! topics; with probability `violation_rate` per control a story is bent so
//! that the control must fire (a missing approval, a self-deploy, a failed
//! scan, …). Everything else is compliant, so the set of violations is known
//! exactly: [`Truth`] lists them with ids computed by
//! [`crate::violation::violation_id`], the function the processor uses.
//!
//! The same seed gives the same events, ids and truth.

mod encode;
mod faults;
mod story;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

pub use encode::{records, schema_id, to_avro, to_json, Encoding};

use crate::schema::Topic;
use crate::violation::violation_id;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Exact number of events.
    pub events: usize,
    pub seed: u64,
    /// Chance per production deploy and per control that the control is violated.
    pub violation_rate: f64,
    /// Days the stream spans.
    pub days: u32,
    /// Event time of the end of the stream, epoch ms.
    pub end_ms: i64,
    /// Number of the first story: deploy, change and pull request ids count
    /// from it, so streams generated to follow one another share no ids.
    pub first_story: u64,
}

impl GenConfig {
    /// A stream of `events` events ending two days before `now_ms`, so that
    /// every decision (the longest deadline is a day) is due by now.
    pub fn new(events: usize, seed: u64, now_ms: i64) -> GenConfig {
        let day = 86_400_000;
        let end_ms = (now_ms / 60_000) * 60_000 - 2 * day;
        GenConfig { events, seed, violation_rate: 0.06, days: 7, end_ms, first_story: 0 }
    }
}

/// One generated event, in its canonical JSON form (timestamps as epoch ms).
#[derive(Clone, Debug)]
pub struct Event {
    pub topic: Topic,
    /// The Kafka key: the service (co-partitioning), or the principal for access.
    pub key: String,
    pub time_ms: i64,
    pub fields: Map<String, Json>,
}

/// A violation the stream must produce.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Expected {
    pub id: String,
    pub control: String,
    pub subject: String,
}

/// The violations injected into a stream.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Truth {
    pub violations: Vec<Expected>,
}

impl Truth {
    fn expect(&mut self, control: &str, subject: &str) {
        self.violations.push(Expected {
            id: violation_id(control, subject),
            control: control.to_string(),
            subject: subject.to_string(),
        });
    }
}

/// The organisation the stories are drawn from. People are principals
/// (`alice`); GitHub knows them as `alice-gh`, Okta and the deploy tool as
/// `alice@acme.example`, and the identity map ([`identities_toml`]) ties the
/// names together.
pub(crate) struct Org {
    pub services: Vec<&'static str>,
    pub engineers: Vec<String>,
    /// Change advisory board members.
    pub approvers: Vec<String>,
    pub pipeline_account: &'static str,
}

impl Org {
    fn new() -> Org {
        let names = [
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj",
            "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yara",
        ];
        Org {
            services: vec!["payments", "ledger", "billing", "checkout", "identity", "reporting", "gateway", "risk"],
            engineers: names.iter().map(|n| n.to_string()).collect(),
            approvers: vec!["maria".into(), "oscar".into(), "priya".into()],
            pipeline_account: "svc-deploybot",
        }
    }

    pub fn github(name: &str) -> String {
        format!("{name}-gh")
    }

    pub fn email(name: &str) -> String {
        format!("{name}@acme.example")
    }
}

/// The generated organisation's identity map, as a config `[identities]` table.
pub fn identities_toml() -> String {
    let mut out = String::from("[identities]\n");
    for (name, aliases) in identities() {
        let quoted: Vec<String> = aliases.iter().map(|a| format!("\"{a}\"")).collect();
        out.push_str(&format!("{name} = [{}]\n", quoted.join(", ")));
    }
    out
}

/// The same map, parsed.
pub fn identities() -> std::collections::BTreeMap<String, Vec<String>> {
    let org = Org::new();
    org.engineers.iter().chain(&org.approvers).map(|n| (n.clone(), vec![Org::github(n), Org::email(n)])).collect()
}

/// Generates the stream, sorted by event time, and its truth.
pub fn generate(config: &GenConfig) -> (Vec<Event>, Truth) {
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let org = Org::new();
    let mut truth = Truth::default();
    let start_ms = config.end_ms - i64::from(config.days) * 86_400_000;
    let mut events = story::initial_grants(&org, start_ms);
    // Stories start evenly over the span, leaving room for the longest story.
    let per_story = story::EVENTS_PER_STORY as f64;
    let planned = ((config.events.saturating_sub(events.len())) as f64 / per_story).max(1.0);
    let span = (config.end_ms - start_ms - story::STORY_SPAN_MS).max(1);
    let spacing = (span as f64 / planned) as i64;
    let mut n = 0u64;
    loop {
        let t0 = start_ms + 60_000 + n as i64 * spacing.max(1) + rng.random_range(0..spacing.max(2) / 2);
        let story = story::Story::draw(&org, &mut rng, config.first_story + n, t0, config.violation_rate);
        if events.len() + story.len() > config.events || t0 + story::STORY_SPAN_MS > config.end_ms {
            break;
        }
        story.write(&mut events, &mut truth);
        n += 1;
    }
    let mut k = 0u64;
    while events.len() < config.events {
        events.push(story::noise_access(&org, &mut rng, k, start_ms, config.end_ms));
        k += 1;
    }
    events.sort_by_key(|e| e.time_ms);
    truth.violations.sort();
    (events, truth)
}

/// Kinds of undecodable record [`bad_record`] makes, in turn.
pub const BAD_RECORD_KINDS: usize = 10;

/// Largest payload the demo accepts, so that an oversize record fits
/// through the broker's own limits.
pub const DEMO_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A record that no decoder can accept, one of each kind in turn: bytes for
/// the dead-letter path. Returns (topic, payload, expected reason).
pub fn bad_record(i: usize, good: &[u8]) -> (Topic, Vec<u8>, &'static str) {
    let topic = Topic::ALL[i % 4];
    let deploy = |event_time: &str, status: &str| {
        format!(
            r#"{{"event_id":"x","event_time":{event_time},"deploy_id":"d","service":"s","environment":"production","commit_sha":"c","actor":"a","automated":true,"status":"{status}"}}"#
        )
        .into_bytes()
    };
    match i % BAD_RECORD_KINDS {
        0 => {
            let cut = good.len().min(12);
            (topic, good[..cut].to_vec(), "avro")
        }
        1 => (topic, crate::decode::confluent_frame(4242, b"\x02xx"), "schema"),
        2 => (topic, br#"{"event_id": 7, "event_time": "2026-01-01T00:00:00Z"}"#.to_vec(), "wrong_type"),
        3 => (topic, br#"{"event_time": "2026-01-01T00:00:00Z"}"#.to_vec(), "missing_field"),
        4 => (Topic::Deploy, deploy("\"1970-01-02T00:00:00Z\"", "succeeded"), "event_time"),
        5 => {
            let mut big = br#"{"event_id": ""#.to_vec();
            big.resize(DEMO_MAX_MESSAGE_BYTES + 1024, b'x');
            big.extend_from_slice(br#""}"#);
            (topic, big, "oversize")
        }
        6 => (topic, b"{\"event_id\": \"\xff\xfe\", \"event_time\": 0}".to_vec(), "json"),
        7 => (Topic::Deploy, deploy("-5", "succeeded"), "event_time"),
        8 => (Topic::Deploy, deploy("\"NaN\"", "succeeded"), "wrong_type"),
        _ => (Topic::Deploy, deploy("1767268800000", "exploded"), "unknown_symbol"),
    }
}

pub(crate) fn hex_id(rng: &mut ChaCha8Rng, len: usize) -> String {
    (0..len).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0')).collect()
}
