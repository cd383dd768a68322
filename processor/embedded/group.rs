//! The embedded broker's group coordinator: Kafka's classic group protocol
//! (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) and committed offsets, as
//! Kafka's own coordinator runs it — a rebalance waits for every member to
//! rejoin (or its rebalance timeout), the leader's SyncGroup hands out the
//! assignments, a member whose heartbeats stop for its session timeout is
//! removed, and a commit from a stale generation is refused. Static
//! membership (`group.instance.id`) is accepted and treated as dynamic.
//!
//! Pure state: the server calls it under its lock with the current instant
//! and awaits the replies it hands back outside the lock.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

/// Kafka error codes the coordinator answers with.
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const REBALANCE_IN_PROGRESS: i16 = 27;

/// How long a group with no members waits for more to join before its
/// first generation (Kafka's `group.initial.rebalance.delay.ms`, 3 s there;
/// short here, where the demo runs one member).
const INITIAL_DELAY: Duration = Duration::from_millis(300);

/// A JoinGroup request, as the coordinator needs it.
pub struct Join {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
}

/// A completed join: what the JoinGroup response carries.
#[derive(Debug)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// Every member's id, instance id and metadata, for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

pub type JoinReply = oneshot::Receiver<Result<Joined, i16>>;
pub type SyncReply = oneshot::Receiver<Result<Bytes, i16>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    Preparing { deadline: Instant, not_before: Instant },
    Completing,
    Stable,
}

struct Member {
    instance_id: Option<String>,
    protocols: Vec<(String, Bytes)>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
    join: Option<oneshot::Sender<Result<Joined, i16>>>,
    sync: Option<oneshot::Sender<Result<Bytes, i16>>>,
    assignment: Bytes,
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Committed offsets by topic and partition, with their metadata.
    offsets: HashMap<(String, i32), (i64, Option<String>)>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: None,
            members: BTreeMap::new(),
            offsets: HashMap::new(),
        }
    }

    /// Starts a rebalance (every member must rejoin) unless one is on.
    fn prepare(&mut self, now: Instant) {
        if matches!(self.state, State::Preparing { .. }) {
            return;
        }
        let not_before = if self.state == State::Empty { now + INITIAL_DELAY } else { now };
        let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
        for m in self.members.values_mut() {
            if let Some(sync) = m.sync.take() {
                let _ = sync.send(Err(REBALANCE_IN_PROGRESS));
            }
        }
        self.state = State::Preparing { deadline: now + timeout.max(INITIAL_DELAY), not_before };
    }

    /// Completes the rebalance if every member has rejoined, or its
    /// deadline passed (members that did not rejoin are removed).
    fn complete_if_ready(&mut self, now: Instant) {
        let State::Preparing { deadline, not_before } = self.state else { return };
        let all_joined = self.members.values().all(|m| m.join.is_some());
        if !(now >= deadline || (all_joined && now >= not_before)) {
            return;
        }
        self.members.retain(|_, m| m.join.is_some());
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            return;
        }
        if !self.leader.as_ref().is_some_and(|l| self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        let leader = self.leader.clone().expect("a member leads");
        let protocols = &self.members[&leader].protocols;
        let chosen = protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == *name)))
            .cloned();
        let Some(protocol) = chosen else {
            // join() admits only members sharing a protocol with the group.
            for m in self.members.values_mut() {
                if let Some(join) = m.join.take() {
                    let _ = join.send(Err(INCONSISTENT_GROUP_PROTOCOL));
                }
            }
            self.members.clear();
            self.state = State::Empty;
            return;
        };
        let everyone: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let metadata = m.protocols.iter().find(|(n, _)| *n == protocol).map(|(_, b)| b.clone());
                (id.clone(), m.instance_id.clone(), metadata.unwrap_or_default())
            })
            .collect();
        self.protocol = protocol;
        for (id, m) in self.members.iter_mut() {
            m.last_seen = now;
            m.assignment = Bytes::new();
            let joined = Joined {
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol: self.protocol.clone(),
                leader: leader.clone(),
                member_id: id.clone(),
                members: if *id == leader { everyone.clone() } else { Vec::new() },
            };
            if let Some(join) = m.join.take() {
                let _ = join.send(Ok(joined));
            }
        }
        self.state = State::Completing;
    }

    fn remove(&mut self, member: &str, now: Instant) {
        if self.members.remove(member).is_none() {
            return;
        }
        if self.members.is_empty() && !matches!(self.state, State::Preparing { .. }) {
            self.state = State::Empty;
            self.leader = None;
            self.generation += 1;
        } else {
            self.prepare(now);
            self.complete_if_ready(now);
        }
    }

    /// The member, seen now, if it belongs to `generation`.
    fn member(&mut self, member: &str, generation: i32, now: Instant) -> Result<&mut Member, i16> {
        let current = self.generation;
        let m = self.members.get_mut(member).ok_or(UNKNOWN_MEMBER_ID)?;
        m.last_seen = now;
        if generation != current {
            return Err(ILLEGAL_GENERATION);
        }
        Ok(m)
    }
}

/// Every group's membership and committed offsets.
#[derive(Default)]
pub struct Coordinator {
    groups: HashMap<String, Group>,
    next_member: u64,
}

impl Coordinator {
    pub fn join(&mut self, group: &str, join: Join, now: Instant) -> Result<JoinReply, i16> {
        let g = self.groups.entry(group.to_string()).or_insert_with(Group::new);
        if !g.members.is_empty() {
            let shared = join
                .protocols
                .iter()
                .any(|(n, _)| g.members.values().all(|m| m.protocols.iter().any(|(theirs, _)| theirs == n)));
            if join.protocol_type != g.protocol_type || !shared {
                return Err(INCONSISTENT_GROUP_PROTOCOL);
            }
        }
        let id = if join.member_id.is_empty() {
            self.next_member += 1;
            format!("{}-{:08x}", join.client_id, self.next_member)
        } else if g.members.contains_key(&join.member_id) {
            join.member_id
        } else {
            return Err(UNKNOWN_MEMBER_ID);
        };
        let (tx, rx) = oneshot::channel();
        g.protocol_type = join.protocol_type;
        let m = g.members.entry(id).or_insert_with(|| Member {
            instance_id: None,
            protocols: Vec::new(),
            session_timeout: join.session_timeout,
            rebalance_timeout: join.rebalance_timeout,
            last_seen: now,
            join: None,
            sync: None,
            assignment: Bytes::new(),
        });
        m.instance_id = join.instance_id;
        m.protocols = join.protocols;
        m.session_timeout = join.session_timeout;
        m.rebalance_timeout = join.rebalance_timeout;
        m.last_seen = now;
        m.join = Some(tx);
        g.prepare(now);
        g.complete_if_ready(now);
        Ok(rx)
    }

    pub fn sync(
        &mut self,
        group: &str,
        generation: i32,
        member: &str,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Result<SyncReply, i16> {
        let g = self.groups.get_mut(group).ok_or(UNKNOWN_MEMBER_ID)?;
        let is_leader = g.leader.as_deref() == Some(member);
        let state = g.state;
        let m = g.member(member, generation, now)?;
        let (tx, rx) = oneshot::channel();
        match state {
            State::Empty | State::Preparing { .. } => return Err(REBALANCE_IN_PROGRESS),
            State::Stable => {
                let _ = tx.send(Ok(m.assignment.clone()));
            }
            State::Completing => {
                m.sync = Some(tx);
                if is_leader {
                    for (id, assignment) in assignments {
                        if let Some(m) = g.members.get_mut(&id) {
                            m.assignment = assignment;
                        }
                    }
                    for m in g.members.values_mut() {
                        if let Some(sync) = m.sync.take() {
                            let _ = sync.send(Ok(m.assignment.clone()));
                        }
                    }
                    g.state = State::Stable;
                }
            }
        }
        Ok(rx)
    }

    pub fn heartbeat(&mut self, group: &str, generation: i32, member: &str, now: Instant) -> i16 {
        let Some(g) = self.groups.get_mut(group) else { return UNKNOWN_MEMBER_ID };
        let state = g.state;
        match g.member(member, generation, now) {
            Err(code) => code,
            Ok(_) if matches!(state, State::Preparing { .. }) => REBALANCE_IN_PROGRESS,
            Ok(_) => 0,
        }
    }

    pub fn leave(&mut self, group: &str, member: &str, now: Instant) -> i16 {
        match self.groups.get_mut(group) {
            Some(g) if g.members.contains_key(member) => {
                g.remove(member, now);
                0
            }
            _ => UNKNOWN_MEMBER_ID,
        }
    }

    /// Checks a commit's generation (a generation of -1 is a commit from
    /// outside the group, accepted as Kafka does) and stores the offsets.
    pub fn commit(
        &mut self,
        group: &str,
        generation: i32,
        member: &str,
        offsets: impl IntoIterator<Item = (String, i32, i64, Option<String>)>,
        now: Instant,
    ) -> i16 {
        let g = self.groups.entry(group.to_string()).or_insert_with(Group::new);
        if generation >= 0 || !member.is_empty() {
            let state = g.state;
            if let Err(code) = g.member(member, generation, now) {
                return code;
            }
            if state == State::Completing {
                return REBALANCE_IN_PROGRESS;
            }
        }
        for (topic, partition, offset, metadata) in offsets {
            g.offsets.insert((topic, partition), (offset, metadata));
        }
        0
    }

    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<(i64, Option<String>)> {
        self.groups.get(group)?.offsets.get(&(topic.to_string(), partition)).cloned()
    }

    /// Expires members whose heartbeats stopped and completes rebalances
    /// whose wait is over; the server calls it every few milliseconds.
    pub fn tick(&mut self, now: Instant) {
        for g in self.groups.values_mut() {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| m.join.is_none() && now.duration_since(m.last_seen) > m.session_timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                tracing::debug!(member = %id, "embedded broker: session expired");
                g.remove(&id, now);
            }
            g.complete_if_ready(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(member: &str) -> Join {
        Join {
            member_id: member.into(),
            instance_id: None,
            client_id: "c".into(),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            session_timeout: Duration::from_secs(6),
            rebalance_timeout: Duration::from_secs(10),
        }
    }

    fn joined(rx: &mut JoinReply) -> Joined {
        rx.try_recv().expect("answered").expect("joined")
    }

    #[test]
    fn a_second_member_rebalances_the_group_and_a_silent_one_is_expired() {
        let mut c = Coordinator::default();
        let t0 = Instant::now();
        let mut a = c.join("g", join(""), t0).unwrap();
        assert!(a.try_recv().is_err(), "the first member waits for the initial delay");
        c.tick(t0 + INITIAL_DELAY);
        let first = joined(&mut a);
        assert_eq!((first.generation, first.members.len()), (1, 1));
        let mut sync = c.sync("g", 1, &first.member_id, vec![(first.member_id.clone(), "p0".into())], t0).unwrap();
        assert_eq!(sync.try_recv().unwrap().unwrap(), "p0");

        let t1 = t0 + Duration::from_secs(1);
        let mut b = c.join("g", join(""), t1).unwrap();
        assert_eq!(c.heartbeat("g", 1, &first.member_id, t1), REBALANCE_IN_PROGRESS);
        assert_eq!(c.commit("g", 1, &first.member_id, [("t".into(), 0, 5, None)], t1), 0);
        let mut a = c.join("g", join(&first.member_id), t1).unwrap();
        let (leader, follower) = (joined(&mut a), joined(&mut b));
        assert_eq!((leader.generation, leader.members.len(), follower.members.len()), (2, 2, 0));
        let mut f = c.sync("g", 2, &follower.member_id, Vec::new(), t1).unwrap();
        assert!(f.try_recv().is_err(), "a follower waits for the leader's assignments");
        let assignments = vec![(leader.member_id.clone(), "p0".into()), (follower.member_id.clone(), "p1".into())];
        c.sync("g", 2, &leader.member_id, assignments, t1).unwrap();
        assert_eq!(f.try_recv().unwrap().unwrap(), "p1");
        assert_eq!(c.commit("g", 1, &leader.member_id, [("t".into(), 0, 9, None)], t1), ILLEGAL_GENERATION);
        assert_eq!(c.committed("g", "t", 0), Some((5, None)));

        // The follower stops heartbeating: past its session it is removed
        // and the leader must rejoin alone.
        assert_eq!(c.heartbeat("g", 2, &leader.member_id, t1 + Duration::from_secs(4)), 0);
        let t2 = t1 + Duration::from_secs(7);
        c.tick(t2);
        assert_eq!(c.heartbeat("g", 2, &leader.member_id, t2), REBALANCE_IN_PROGRESS);
        let mut a = c.join("g", join(&leader.member_id), t2).unwrap();
        assert_eq!(joined(&mut a).members.len(), 1);
        assert_eq!(c.heartbeat("g", 3, &follower.member_id, t2), UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn a_leaving_member_ends_its_generation_and_an_unknown_one_is_refused() {
        let mut c = Coordinator::default();
        let t0 = Instant::now();
        let mut a = c.join("g", join(""), t0).unwrap();
        c.tick(t0 + INITIAL_DELAY);
        let first = joined(&mut a);
        assert_eq!(c.leave("g", &first.member_id, t0), 0);
        assert_eq!(c.heartbeat("g", first.generation, &first.member_id, t0), UNKNOWN_MEMBER_ID);
        assert!(matches!(c.join("g", join("stranger"), t0), Err(UNKNOWN_MEMBER_ID)));
        let mut other = join("");
        other.protocol_type = "connect".into();
        let _waiting = c.join("g", join(""), t0).unwrap();
        assert!(matches!(c.join("g", other, t0), Err(INCONSISTENT_GROUP_PROTOCOL)));
    }
}
