//! Ingest: one batch of messages from the source decoded on the pool, then
//! stored topic by topic into state and the controls' pending triggers
//! (rejects to the dead letters).

use std::time::Instant;

use datafusion::arrow::record_batch::RecordBatch;

use super::{observe, wall_ms, Pipeline};
use crate::controls::append_on_time;
use crate::decode::{Decoded, RawMessage};
use crate::schema::Topic;
use crate::sink::DeadLetter;
use crate::source::InMessage;
use crate::state::{at_or_above, without_partitions};

/// One batch's messages, split by topic, being decoded on the pool.
pub(super) struct Decoding(tokio::sync::oneshot::Receiver<Vec<(Topic, Vec<InMessage>, Decoded)>>);

impl Pipeline {
    /// Starts decoding one batch of messages on a pool thread, topic by
    /// topic: the pipeline stores the batch before meanwhile, so decoding a
    /// batch overlaps storing the last one (decoding and storing each keep
    /// about one core busy; splitting each topic's messages over both pool
    /// threads as well took 25 % more CPU for a slower read).
    pub(super) fn decode(&mut self, messages: Vec<InMessage>) -> Decoding {
        if !messages.is_empty() {
            self.status.first_consumed_at.get_or_insert_with(Instant::now);
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let decoders = self.decoders.clone();
        let wall = wall_ms();
        rayon::spawn(move || {
            let mut of_topic: [Vec<InMessage>; 4] = Default::default();
            for m in messages {
                of_topic[m.topic.index()].push(m);
            }
            let parts = Topic::ALL
                .into_iter()
                .zip(of_topic)
                .filter(|(_, messages)| !messages.is_empty())
                .map(|(topic, messages)| {
                    let raw = messages.iter().map(|m| RawMessage {
                        payload: m.payload.as_deref(),
                        headers: &m.headers,
                        partition: m.partition,
                        offset: m.offset,
                    });
                    let decoded = decoders[topic.index()].decode_here(raw, wall);
                    (topic, messages, decoded)
                })
                .collect();
            let _ = tx.send(parts);
        });
        Decoding(rx)
    }

    /// Takes in one decoded batch topic by topic: into state and the
    /// controls' pending triggers, rejects to the dead letters.
    pub(super) async fn store(&mut self, decoding: Decoding) -> anyhow::Result<()> {
        let parts = decoding.0.await.map_err(|_| anyhow::anyhow!("decoding a batch of messages failed"))?;
        let now = Instant::now();
        let any = !parts.is_empty();
        for (topic, of_topic, decoded) in parts {
            if let Some((batch, watermark)) = self.take_in(topic, &of_topic, decoded, now)? {
                // Rows at or behind the watermark: decisions already made
                // are re-run with them (and the batch appended meanwhile).
                // Cloning a batch clones Arcs; the evidence is only
                // formatted when a late row did change something.
                let time_index = self.catalog.event(topic).time_index;
                let amendments =
                    self.controls.append_amending(&mut self.state, topic, batch.clone(), time_index, watermark).await?;
                if let (false, Some(w)) = (amendments.is_empty(), watermark) {
                    let late = observe::late_evidence(&batch, topic, w);
                    self.amendments.extend(amendments.into_iter().map(|a| (a, late.clone())));
                }
            }
        }
        if any {
            self.status.last_consumed_at = Some(Instant::now());
        }
        Ok(())
    }

    /// What one topic's messages decoded to, taken in: counted, rejects to
    /// the dead letters, watermarks moved, triggers admitted, rows appended
    /// to state. A batch with late rows is given back (with the watermark)
    /// for the amending append, which waits on queries.
    fn take_in(
        &mut self,
        topic: Topic,
        of_topic: &[InMessage],
        decoded: Decoded,
        now: Instant,
    ) -> anyhow::Result<Option<(RecordBatch, Option<i64>)>> {
        self.metrics.events_consumed.with_label_values(&[topic.name()]).inc_by(of_topic.len() as u64);
        self.metrics.events_ignored.with_label_values(&[topic.name()]).inc_by(decoded.ignored as u64);
        self.status.consumed += of_topic.len() as u64;
        // Messages come in runs of one partition, in offset order: the last
        // of each run is the partition's next offset so far.
        for (i, m) in of_topic.iter().enumerate() {
            if of_topic.get(i + 1).is_none_or(|next| next.partition != m.partition) {
                self.next_offsets.insert((topic, m.partition), m.offset + 1);
            }
        }
        for reject in decoded.rejects {
            if topic == Topic::Access && !self.owned_change.contains(&reject.partition) {
                continue; // every instance reads it; its owner dead-letters it
            }
            let m = of_topic.iter().find(|m| m.partition == reject.partition && m.offset == reject.offset);
            let reason = reject.error.reason();
            self.metrics.events_rejected.with_label_values(&[topic.name(), reason]).inc();
            self.status.rejected += 1;
            let source_topic = self.config.input_topics[topic.index()].clone();
            tracing::debug!(%source_topic, partition = reject.partition, offset = reject.offset, error = %reject.error, "rejected record");
            self.dead.push(DeadLetter {
                error: format!("{source_topic}/{}/{}: {}", reject.partition, reject.offset, reject.error),
                source_topic,
                partition: reject.partition,
                offset: reject.offset,
                key: m.and_then(|m| m.key.as_deref().map(<[u8]>::to_vec)),
                payload: m.and_then(|m| m.payload.as_deref().map(<[u8]>::to_vec)),
                headers: m.map(|m| m.headers.clone()).unwrap_or_default(),
                reason,
            });
        }
        for (partition, max_time) in decoded.max_time {
            self.watermarks.observe((topic, partition), max_time, now);
        }
        let Some(batch) = decoded.batch else { return Ok(None) };
        // Every instance reads all access events as context, but decides
        // only the access triggers of the partitions whose change partition
        // it owns (access requests are keyed, like grants, by principal).
        let triggers = match topic {
            Topic::Access => {
                let others: Vec<i32> =
                    of_topic.iter().map(|m| m.partition).filter(|p| !self.owned_change.contains(p)).collect();
                without_partitions(&batch, &others)
            }
            _ => Some(batch.clone()),
        };
        // Rows below a floor read back on assignment were decided before.
        let floors: Vec<(i32, i64)> = self.source.floors(topic).collect();
        let triggers = triggers.and_then(|t| at_or_above(&t, &floors));
        if let Some(triggers) = triggers {
            self.controls.admit(topic, &triggers, self.watermarks.current())?;
        }
        let watermark = self.watermarks.current();
        let time_index = self.catalog.event(topic).time_index;
        if let Some(w) = watermark {
            let late = observe::late_rows(&batch, time_index, w) as u64;
            self.metrics.late_events.with_label_values(&[topic.name()]).inc_by(late);
        }
        Ok(append_on_time(&mut self.state, topic, batch, time_index, watermark).map(|late| (late, watermark)))
    }
}
