//! Event time: per-partition watermarks, idleness and the wall-clock fallback.
//!
//! A partition's watermark is the highest event time seen on it minus the
//! allowed lateness. The pipeline's watermark is the minimum over the assigned
//! partitions that are not idle; a partition is idle once it has been caught
//! up (nothing left to read) and silent for the idle timeout. When every
//! assigned partition is idle, the watermark follows the wall clock minus the
//! allowed lateness (if enabled), so absence deadlines still fire in quiet
//! hours. The watermark never goes backwards.
//!
//! This module does no IO: callers pass the clock in.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::schema::Topic;

/// A topic partition.
pub type TopicPartition = (Topic, i32);

/// Watermark settings.
#[derive(Clone, Copy, Debug)]
pub struct WatermarkConfig {
    pub allowed_lateness_ms: i64,
    pub idle_timeout: Duration,
    pub wall_clock_fallback: bool,
}

#[derive(Debug)]
struct PartitionClock {
    max_event_ms: Option<i64>,
    last_message: Option<Instant>,
    caught_up_since: Option<Instant>,
}

/// Tracks every assigned partition's event-time progress.
#[derive(Debug)]
pub struct Watermarks {
    config: WatermarkConfig,
    partitions: BTreeMap<TopicPartition, PartitionClock>,
    current: Option<i64>,
}

impl Watermarks {
    pub fn new(config: WatermarkConfig) -> Watermarks {
        Watermarks { config, partitions: BTreeMap::new(), current: None }
    }

    /// Replaces the set of assigned partitions, keeping what is known of the
    /// ones that stay.
    pub fn assign(&mut self, assigned: &[TopicPartition]) {
        self.partitions.retain(|tp, _| assigned.contains(tp));
        for tp in assigned {
            self.partitions.entry(*tp).or_insert(PartitionClock {
                max_event_ms: None,
                last_message: None,
                caught_up_since: None,
            });
        }
    }

    /// Records events up to `max_event_ms` read from `tp` at `now`.
    pub fn observe(&mut self, tp: TopicPartition, max_event_ms: i64, now: Instant) {
        if let Some(clock) = self.partitions.get_mut(&tp) {
            clock.max_event_ms = Some(clock.max_event_ms.map_or(max_event_ms, |m| m.max(max_event_ms)));
            clock.last_message = Some(now);
            clock.caught_up_since = None;
        }
    }

    /// Records whether `tp` has anything left to read.
    pub fn set_caught_up(&mut self, tp: TopicPartition, caught_up: bool, now: Instant) {
        if let Some(clock) = self.partitions.get_mut(&tp) {
            match (caught_up, clock.caught_up_since) {
                (true, None) => clock.caught_up_since = Some(now),
                (false, _) => clock.caught_up_since = None,
                (true, Some(_)) => {}
            }
        }
    }

    fn is_idle(&self, clock: &PartitionClock, now: Instant) -> bool {
        let quiet_since = match (clock.caught_up_since, clock.last_message) {
            (Some(c), Some(m)) => c.max(m),
            (Some(c), None) => c,
            (None, _) => return false,
        };
        now.duration_since(quiet_since) >= self.config.idle_timeout
    }

    /// Recomputes and returns the watermark (epoch ms), or `None` while some
    /// active partition has not been heard from.
    pub fn advance(&mut self, now: Instant, wall_ms: i64) -> Option<i64> {
        let mut min: Option<i64> = None;
        let mut any_active = false;
        for clock in self.partitions.values() {
            if self.is_idle(clock, now) {
                continue;
            }
            any_active = true;
            match clock.max_event_ms {
                Some(t) => {
                    let w = t.saturating_sub(self.config.allowed_lateness_ms);
                    min = Some(min.map_or(w, |m| m.min(w)));
                }
                None => return self.current,
            }
        }
        let candidate = if any_active {
            min
        } else if self.config.wall_clock_fallback && !self.partitions.is_empty() {
            Some(wall_ms.saturating_sub(self.config.allowed_lateness_ms))
        } else {
            None
        };
        if let Some(c) = candidate {
            self.current = Some(self.current.map_or(c, |w| w.max(c)));
        }
        self.current
    }

    /// Forgets what is known of `partitions`: they are read again from an
    /// earlier offset (a revoked partition reassigned, the access topic
    /// re-read), so their old progress no longer describes what is in state.
    pub fn forget(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.partitions.remove(tp);
        }
    }

    /// Forgets the watermark so it is recomputed from the partitions now
    /// assigned, and may move back: newly assigned partitions replay from
    /// their committed offsets, and their triggers are not late for that.
    /// Moving back only delays decisions; none is made twice (see `published`).
    pub fn reset(&mut self) {
        self.current = None;
    }

    pub fn current(&self) -> Option<i64> {
        self.current
    }

    /// The lowest partition watermark of each topic, for metrics.
    pub fn per_topic(&self) -> Vec<(Topic, i64)> {
        let mut out: Vec<(Topic, i64)> = Vec::new();
        for ((topic, _), clock) in &self.partitions {
            if let Some(t) = clock.max_event_ms {
                let w = t.saturating_sub(self.config.allowed_lateness_ms);
                match out.iter_mut().find(|(tp, _)| tp == topic) {
                    Some((_, m)) => *m = (*m).min(w),
                    None => out.push((*topic, w)),
                }
            }
        }
        out
    }

    /// True when every assigned partition is caught up.
    /// The partitions holding the watermark back because nothing has been
    /// read from them and they are not known to be caught up: what an
    /// operator wants to see when the watermark stalls.
    pub fn waiting_on(&self, now: Instant) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(_, c)| c.max_event_ms.is_none() && !self.is_idle(c, now))
            .map(|(tp, _)| *tp)
            .collect()
    }

    pub fn all_caught_up(&self) -> bool {
        !self.partitions.is_empty() && self.partitions.values().all(|c| c.caught_up_since.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(idle_s: u64) -> Watermarks {
        Watermarks::new(WatermarkConfig {
            allowed_lateness_ms: 1_000,
            idle_timeout: Duration::from_secs(idle_s),
            wall_clock_fallback: true,
        })
    }

    #[test]
    fn watermark_is_min_over_partitions_minus_lateness() {
        let mut w = marks(10);
        let now = Instant::now();
        w.assign(&[(Topic::Deploy, 0), (Topic::Change, 0)]);
        w.observe((Topic::Deploy, 0), 50_000, now);
        assert_eq!(w.advance(now, 0), None, "a silent partition holds the watermark back");
        w.observe((Topic::Change, 0), 20_000, now);
        assert_eq!(w.advance(now, 0), Some(19_000));
    }

    #[test]
    fn idle_caught_up_partition_stops_holding_back() {
        let mut w = marks(10);
        let t0 = Instant::now();
        w.assign(&[(Topic::Deploy, 0), (Topic::Change, 0)]);
        w.observe((Topic::Deploy, 0), 50_000, t0);
        w.observe((Topic::Change, 0), 20_000, t0);
        w.set_caught_up((Topic::Change, 0), true, t0);
        assert_eq!(w.advance(t0 + Duration::from_secs(5), 0), Some(19_000));
        assert_eq!(w.advance(t0 + Duration::from_secs(11), 0), Some(49_000));
    }

    #[test]
    fn all_idle_follows_wall_clock_and_never_goes_back() {
        let mut w = marks(1);
        let t0 = Instant::now();
        w.assign(&[(Topic::Deploy, 0)]);
        w.observe((Topic::Deploy, 0), 50_000, t0);
        w.set_caught_up((Topic::Deploy, 0), true, t0);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(w.advance(later, 100_000), Some(99_000));
        w.observe((Topic::Deploy, 0), 60_000, later);
        assert_eq!(w.advance(later, 100_000), Some(99_000));
    }
}
