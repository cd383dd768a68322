//! The embedded broker's answers, one function per API: the logs for
//! Produce, Fetch, ListOffsets and Metadata; the coordinator for groups and
//! offsets. Node 0, this process, leads every partition.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::group::{Join, UNKNOWN_MEMBER_ID};
use super::log::Partition;
use super::server::{api_versions, Shared, State};

const OFFSET_OUT_OF_RANGE: i16 = 1;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// Partitions of a topic created because a client asked for it by name
/// (Kafka's `num.partitions` default).
const AUTO_CREATE_PARTITIONS: usize = 1;
const NODE: i32 = 0;

/// Answers one request; `None` for a produce with `acks=0`, which gets none.
/// A request outside [`super::server::APIS`] is an error: the server closes
/// the connection, as Kafka does, rather than leave the client waiting.
pub async fn handle(
    shared: &Shared,
    header: &RequestHeader,
    request: RequestKind,
) -> anyhow::Result<Option<ResponseKind>> {
    let client = header.client_id.as_ref().map_or("", |c| c.as_str());
    Ok(Some(match request {
        RequestKind::ApiVersions(_) => api_versions().into(),
        RequestKind::Metadata(r) => metadata(shared, header.request_api_version, r).into(),
        RequestKind::Produce(r) => return Ok(produce(shared, r).map(Into::into)),
        RequestKind::Fetch(r) => fetch(shared, r).await.into(),
        RequestKind::ListOffsets(r) => list_offsets(shared, r).into(),
        RequestKind::FindCoordinator(_) => {
            let host = StrBytes::from_string(shared.addr.ip().to_string());
            let r = FindCoordinatorResponse::default().with_node_id(NODE.into()).with_host(host);
            r.with_port(i32::from(shared.addr.port())).into()
        }
        RequestKind::InitProducerId(_) => {
            let mut state = shared.lock();
            state.next_producer_id += 1;
            InitProducerIdResponse::default().with_producer_id(state.next_producer_id.into()).into()
        }
        RequestKind::JoinGroup(r) => join_group(shared, client, r).await.into(),
        RequestKind::SyncGroup(r) => sync_group(shared, r).await.into(),
        RequestKind::Heartbeat(r) => {
            let code = shared.lock().groups.heartbeat(&r.group_id, r.generation_id, &r.member_id, Instant::now());
            HeartbeatResponse::default().with_error_code(code).into()
        }
        RequestKind::LeaveGroup(r) => leave_group(shared, r).into(),
        RequestKind::OffsetCommit(r) => offset_commit(shared, r).into(),
        RequestKind::OffsetFetch(r) => offset_fetch(shared, r).into(),
        _ => anyhow::bail!("API key {} is not answered here", header.request_api_key),
    }))
}

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str(s))
}

fn metadata(shared: &Shared, version: i16, r: MetadataRequest) -> MetadataResponse {
    let mut state = shared.lock();
    let names: Vec<String> = match r.topics {
        Some(t) if !(version == 0 && t.is_empty()) => {
            t.into_iter().filter_map(|t| t.name).map(|n| n.0.as_str().to_string()).collect()
        }
        _ => state.topics.keys().cloned().collect(),
    };
    let auto_create = version < 4 || r.allow_auto_topic_creation;
    let topics = names
        .into_iter()
        .map(|name| {
            if auto_create && !state.topics.contains_key(&name) && valid_topic(&name) {
                state.topics.insert(name.clone(), (0..AUTO_CREATE_PARTITIONS).map(|_| Partition::default()).collect());
            }
            let topic = MetadataResponseTopic::default().with_name(Some(topic_name(&name)));
            match state.topics.get(&name) {
                None => topic.with_error_code(UNKNOWN_TOPIC_OR_PARTITION),
                Some(partitions) => topic.with_partitions(
                    (0..partitions.len() as i32)
                        .map(|p| {
                            MetadataResponsePartition::default()
                                .with_partition_index(p)
                                .with_leader_id(NODE.into())
                                .with_replica_nodes(vec![NODE.into()])
                                .with_isr_nodes(vec![NODE.into()])
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    let broker = MetadataResponseBroker::default()
        .with_node_id(NODE.into())
        .with_host(str(&shared.addr.ip().to_string()))
        .with_port(i32::from(shared.addr.port()));
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(str("vigil-embedded")))
        .with_controller_id(NODE.into())
        .with_topics(topics)
}

/// Kafka's rule for topic names: 1–249 of `[a-zA-Z0-9._-]`.
fn valid_topic(name: &str) -> bool {
    (1..=249).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn produce(shared: &Shared, r: ProduceRequest) -> Option<ProduceResponse> {
    let mut state = shared.lock();
    let responses = r
        .topic_data
        .into_iter()
        .map(|t| {
            let partitions = t
                .partition_data
                .into_iter()
                .map(|p| {
                    let response = PartitionProduceResponse::default().with_index(p.index);
                    let log = partition(&mut state, &t.name, p.index);
                    match (log, p.records) {
                        (None, _) => response.with_error_code(UNKNOWN_TOPIC_OR_PARTITION),
                        (Some(log), records) => match log.append(records.as_deref().unwrap_or_default()) {
                            Ok(base) => response.with_base_offset(base),
                            Err(refused) => response.with_error_code(refused as i16).with_base_offset(-1),
                        },
                    }
                })
                .collect();
            TopicProduceResponse::default().with_name(t.name).with_partition_responses(partitions)
        })
        .collect();
    drop(state);
    shared.appended.notify_waiters();
    (r.acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

fn partition<'a>(state: &'a mut State, topic: &str, index: i32) -> Option<&'a mut Partition> {
    state.topics.get_mut(topic)?.get_mut(usize::try_from(index).ok()?)
}

/// Answers a fetch as soon as any requested partition has data past its
/// offset, or after the request's `max_wait_ms` with whatever there is.
async fn fetch(shared: &Shared, r: FetchRequest) -> FetchResponse {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(u64::try_from(r.max_wait_ms).unwrap_or(0));
    loop {
        let appended = shared.appended.notified();
        tokio::pin!(appended);
        appended.as_mut().enable();
        let (response, bytes) = fetch_now(shared, &r);
        if bytes >= usize::try_from(r.min_bytes).unwrap_or(0).max(1) || tokio::time::Instant::now() >= deadline {
            return response;
        }
        tokio::select! {
            _ = appended => {}
            _ = tokio::time::sleep_until(deadline) => return fetch_now(shared, &r).0,
        }
    }
}

fn fetch_now(shared: &Shared, r: &FetchRequest) -> (FetchResponse, usize) {
    let state = shared.lock();
    let mut left = usize::try_from(r.max_bytes).unwrap_or(0);
    let mut total = 0;
    let responses = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let data = PartitionData::default().with_partition_index(p.partition);
                    let Some(log) = state.topics.get(t.topic.as_str()).and_then(|l| l.get(p.partition as usize)) else {
                        return data.with_error_code(UNKNOWN_TOPIC_OR_PARTITION).with_high_watermark(-1);
                    };
                    let end = log.end();
                    let data = data.with_high_watermark(end).with_last_stable_offset(end).with_log_start_offset(0);
                    if p.fetch_offset < 0 || p.fetch_offset > end {
                        return data.with_error_code(OFFSET_OUT_OF_RANGE);
                    }
                    if left == 0 && total > 0 {
                        return data;
                    }
                    let limit = usize::try_from(p.partition_max_bytes).unwrap_or(0).min(left.max(1));
                    let mut records = BytesMut::new();
                    for batch in log.read(p.fetch_offset, limit) {
                        records.extend_from_slice(&batch);
                    }
                    total += records.len();
                    left = left.saturating_sub(records.len());
                    data.with_records(Some(records.freeze()))
                })
                .collect();
            FetchableTopicResponse::default().with_topic(t.topic.clone()).with_partitions(partitions)
        })
        .collect();
    (FetchResponse::default().with_responses(responses), total)
}

fn list_offsets(shared: &Shared, r: ListOffsetsRequest) -> ListOffsetsResponse {
    let state = shared.lock();
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let log = state.topics.get(t.name.as_str());
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let response = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    let Some(log) = log.and_then(|l| l.get(p.partition_index as usize)) else {
                        return response.with_error_code(UNKNOWN_TOPIC_OR_PARTITION);
                    };
                    let offset = match p.timestamp {
                        -1 => log.end(),
                        -2 => 0,
                        at => log.offset_for_time(at).unwrap_or(-1),
                    };
                    response.with_offset(offset).with_timestamp(-1)
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

async fn join_group(shared: &Shared, client: &str, r: JoinGroupRequest) -> JoinGroupResponse {
    let failed = |code: i16, member: StrBytes| {
        JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_member_id(member)
            .with_protocol_name(Some(StrBytes::default()))
    };
    let session = Duration::from_millis(u64::try_from(r.session_timeout_ms).unwrap_or(0));
    let rebalance = if r.rebalance_timeout_ms > 0 {
        Duration::from_millis(r.rebalance_timeout_ms as u64)
    } else {
        session // v0 has no rebalance timeout: Kafka uses the session's.
    };
    let join = Join {
        member_id: r.member_id.as_str().to_string(),
        instance_id: r.group_instance_id.as_ref().map(|i| i.as_str().to_string()),
        client_id: if client.is_empty() { "member".to_string() } else { client.to_string() },
        protocol_type: r.protocol_type.as_str().to_string(),
        protocols: r.protocols.iter().map(|p| (p.name.as_str().to_string(), p.metadata.clone())).collect(),
        session_timeout: session,
        rebalance_timeout: rebalance,
    };
    let reply = shared.lock().groups.join(&r.group_id, join, Instant::now());
    let joined = match reply {
        Err(code) => return failed(code, r.member_id),
        Ok(rx) => rx.await,
    };
    match joined {
        Ok(Ok(j)) => JoinGroupResponse::default()
            .with_generation_id(j.generation)
            .with_protocol_type(Some(str(&j.protocol_type)))
            .with_protocol_name(Some(str(&j.protocol)))
            .with_leader(str(&j.leader))
            .with_member_id(str(&j.member_id))
            .with_members(
                j.members
                    .into_iter()
                    .map(|(id, instance, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(str(&id))
                            .with_group_instance_id(instance.map(|i| str(&i)))
                            .with_metadata(metadata)
                    })
                    .collect(),
            ),
        Ok(Err(code)) => failed(code, r.member_id),
        // A rejoin from the same member replaced this one's reply.
        Err(_) => failed(UNKNOWN_MEMBER_ID, r.member_id),
    }
}

async fn sync_group(shared: &Shared, r: SyncGroupRequest) -> SyncGroupResponse {
    let assignments = r.assignments.iter().map(|a| (a.member_id.as_str().to_string(), a.assignment.clone())).collect();
    let reply = shared.lock().groups.sync(&r.group_id, r.generation_id, &r.member_id, assignments, Instant::now());
    let response = SyncGroupResponse::default().with_protocol_type(r.protocol_type).with_protocol_name(r.protocol_name);
    let assigned = match reply {
        Err(code) => return response.with_error_code(code),
        Ok(rx) => rx.await,
    };
    match assigned {
        Ok(Ok(assignment)) => response.with_assignment(assignment),
        Ok(Err(code)) => response.with_error_code(code),
        Err(_) => response.with_error_code(COORDINATOR_NOT_AVAILABLE),
    }
}

fn leave_group(shared: &Shared, r: LeaveGroupRequest) -> LeaveGroupResponse {
    let mut state = shared.lock();
    let now = Instant::now();
    if r.members.is_empty() {
        let code = state.groups.leave(&r.group_id, &r.member_id, now);
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = r
        .members
        .into_iter()
        .map(|m| {
            let code = state.groups.leave(&r.group_id, &m.member_id, now);
            leave_group_response::MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

fn offset_commit(shared: &Shared, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let offsets: Vec<(String, i32, i64, Option<String>)> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                let metadata = p.committed_metadata.as_ref().map(|m| m.as_str().to_string());
                (t.name.as_str().to_string(), p.partition_index, p.committed_offset, metadata)
            })
        })
        .collect();
    let code = shared.lock().groups.commit(
        &r.group_id,
        r.generation_id_or_member_epoch,
        &r.member_id,
        offsets,
        Instant::now(),
    );
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    offset_commit_response::OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            offset_commit_response::OffsetCommitResponseTopic::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

fn offset_fetch(shared: &Shared, r: OffsetFetchRequest) -> OffsetFetchResponse {
    let state = shared.lock();
    let wanted: Vec<(String, Vec<i32>)> = match r.topics {
        Some(topics) => topics.into_iter().map(|t| (t.name.as_str().to_string(), t.partition_indexes)).collect(),
        None => state.topics.iter().map(|(name, ps)| (name.clone(), (0..ps.len() as i32).collect())).collect(),
    };
    let topics = wanted
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|p| {
                    let (offset, metadata) = state.groups.committed(&r.group_id, &name, p).unwrap_or((-1, None));
                    offset_fetch_response::OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_committed_leader_epoch(-1)
                        .with_metadata(Some(str(metadata.as_deref().unwrap_or(""))))
                })
                .collect();
            offset_fetch_response::OffsetFetchResponseTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
