//! The engine's ingest and decisions, together and one at a time.

use super::*;
use crate::bench::core::{config, encode};
use crate::generate::{generate, GenConfig};

/// Everything one engine decided and amended, in order.
type Outcome = Vec<(usize, Vec<(String, bool)>)>;

fn outcome(evaluations: &[Evaluation], amendments: &[Amendment]) -> Outcome {
    let mut out: Outcome = evaluations
        .iter()
        .map(|e| (e.control, e.findings.iter().map(|f| (f.subject.clone(), f.late)).collect()))
        .collect();
    for a in amendments {
        out.push(match a {
            Amendment::New { control, finding } => (*control, vec![(format!("new {}", finding.subject), true)]),
            Amendment::Retracted { control, finding } => (*control, vec![(format!("gone {}", finding.subject), false)]),
        });
    }
    out
}

/// Decoding the next chunk while the one before is stored, and deciding
/// while the next events are ingested, change nothing: the same state,
/// decisions and amendments, in the same order, as one topic at a time
/// and one decision at a time. CI events are held back past a decision,
/// so they arrive late (and take the path that waits on queries, and on
/// the decision under way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingesting_topics_together_decides_as_one_at_a_time() {
    let now = crate::pipeline::wall_ms();
    let catalog = Catalog::builtin().unwrap();
    let (stream, _) = generate(&GenConfig::new(12_000, 5, now));
    let decided_at = stream[5_999].time_ms;
    let end = stream[stream.len() - 1].time_ms + 2 * 86_400_000;
    let held_back = |i: usize| (2_000..6_000).contains(&i) && stream[i].topic == Topic::Ci;
    let before: Vec<usize> = (0..6_000).filter(|i| !held_back(*i)).collect();
    let after: Vec<usize> = (0..stream.len()).filter(|i| held_back(*i) || *i >= 6_000).collect();
    let payloads = encode(&catalog, &stream).unwrap();
    let segments: Vec<Vec<(Topic, Vec<u8>)>> =
        [before, after].map(|s| s.iter().map(|i| payloads[*i].clone()).collect()).into();
    let mut outcomes = Vec::new();
    // (topics together, decisions behind ingest)
    for (together, behind) in [(false, false), (true, false), (true, true)] {
        let mut engine = Engine::new(&config().unwrap(), &crate::controls::builtin_sources()).await.unwrap();
        let (mut out, mut amended, mut rows, mut waited) = (Outcome::new(), 0, 0, 0);
        // Each chunk split by topic; together, the next chunk (the
        // next segment's first, past the decision) is decoded ahead.
        let chunks: Vec<Vec<_>> = segments
            .iter()
            .enumerate()
            .map(|(segment, payloads)| {
                payloads
                    .chunks(2_000)
                    .enumerate()
                    .map(|(n, chunk)| parts_of(chunk, (segment * 100_000 + n * 2_000) as i64))
                    .collect()
            })
            .collect();
        let mut ahead = None;
        for (segment, segment_chunks) in chunks.iter().enumerate() {
            for (n, parts) in segment_chunks.iter().enumerate() {
                let next = segment_chunks.get(n + 1).or(chunks.get(segment + 1).and_then(|c| c.first()));
                let ingested = if together {
                    engine.ingest_all(&mut ahead, parts, next.map(|n| n.as_slice()), now).await.unwrap()
                } else {
                    let mut all = Vec::new();
                    for (topic, messages) in parts {
                        all.push(engine.ingest(*topic, messages.iter().copied(), now).await.unwrap());
                    }
                    all
                };
                for i in ingested {
                    rows += i.rows;
                    amended += i.amendments.len();
                    waited += i.decided.len();
                    out.extend(outcome(&i.decided, &i.amendments));
                }
            }
            let evaluations = match (segment, behind) {
                (0, true) => engine.decide_behind(decided_at).await.unwrap(),
                (0, false) => engine.decide(decided_at).await.unwrap(),
                _ => engine.decide(end).await.unwrap(),
            };
            out.extend(outcome(&evaluations, &[]));
        }
        let held: Vec<usize> = Topic::ALL.iter().map(|t| engine.state.usage(*t).rows).collect();
        assert_eq!(waited > 0, behind, "late rows wait for the decision under way, and only then");
        outcomes.push((rows, held, amended, out));
    }
    let (rows, _, amended, _) = &outcomes[0];
    assert_eq!(*rows, 12_000);
    assert!(*amended > 0, "the test needs late rows that change decisions");
    let counts = |o: &(usize, Vec<usize>, usize, Outcome)| (o.0, o.1.clone(), o.2, o.3.len());
    for other in &outcomes[1..] {
        assert_eq!(counts(&outcomes[0]), counts(other), "rows, rows held, amendments, outcomes");
        assert!(outcomes[0] == *other, "the same number of outcomes, not the same outcomes in order");
    }
}
