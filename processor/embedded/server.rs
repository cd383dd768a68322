//! The embedded broker's network side: a loopback listener, Kafka's framing
//! (a size, a request header, a body), one task per connection answering
//! its requests in order as Kafka does, and the API versions it speaks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use super::group::Coordinator;
use super::log::Partition;

/// The largest request accepted (Kafka's `socket.request.max.bytes`).
const MAX_REQUEST: usize = 100 << 20;

/// `UNSUPPORTED_VERSION`.
const UNSUPPORTED_VERSION: i16 = 35;

/// The APIs and versions this broker speaks: what librdkafka, the Java
/// client and kcat need to produce (idempotently), fetch and run a classic
/// consumer group. Each range stops below the versions that bring topic
/// ids, leader epochs or fetch sessions, which a one-node in-memory log
/// has no use for.
pub const APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 8),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 3),
    (ApiKey::Metadata, 0, 4),
    (ApiKey::OffsetCommit, 2, 7),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 3),
    (ApiKey::LeaveGroup, 0, 3),
    (ApiKey::SyncGroup, 0, 3),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::InitProducerId, 0, 2),
];

/// What every connection shares: the logs and the group coordinator under
/// one lock, and a signal woken by every append for fetches waiting on data.
pub struct Shared {
    pub addr: SocketAddr,
    state: Mutex<State>,
    pub appended: Notify,
}

pub struct State {
    pub topics: BTreeMap<String, Vec<Partition>>,
    pub groups: Coordinator,
    pub next_producer_id: i64,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Binds a loopback port and returns the state the server will share.
pub fn bind() -> anyhow::Result<(std::net::TcpListener, Arc<Shared>)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let state = State { topics: BTreeMap::new(), groups: Coordinator::default(), next_producer_id: 1000 };
    let shared = Shared { addr: listener.local_addr()?, state: Mutex::new(state), appended: Notify::new() };
    Ok((listener, Arc::new(shared)))
}

/// Serves connections until `stop` turns true.
pub async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let ticker = shared.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(20));
        loop {
            every.tick().await;
            ticker.lock().groups.tick(std::time::Instant::now());
        }
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = accepted?;
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, &shared).await {
                        tracing::debug!(%peer, error = %e, "embedded broker: connection closed");
                    }
                });
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

async fn connection(stream: TcpStream, shared: &Shared) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let (mut read, mut write) = stream.into_split();
    let mut out = BytesMut::new();
    loop {
        let size = match read.read_i32().await {
            Ok(size) => usize::try_from(size).ok().filter(|s| *s <= MAX_REQUEST),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let Some(size) = size else { anyhow::bail!("a request of a negative or oversized length") };
        let mut frame = BytesMut::zeroed(size);
        read.read_exact(&mut frame).await?;
        let mut frame = frame.freeze();
        if frame.len() < 4 {
            anyhow::bail!("a request shorter than its header");
        }
        let key = (&frame[..2]).get_i16();
        let version = (&frame[2..4]).get_i16();
        let Ok(api) = ApiKey::try_from(key) else { anyhow::bail!("unknown API key {key}") };
        let header = decode_request_header_from_buffer(&mut frame)?;
        let response = if !speaks(api, version) {
            if api != ApiKey::ApiVersions {
                anyhow::bail!("{api:?} v{version} is not spoken here");
            }
            // Kafka answers an ApiVersions it cannot parse in v0, with
            // the versions it does speak, so the client can retry.
            let mut r = api_versions();
            r.error_code = UNSUPPORTED_VERSION;
            Some((ResponseKind::ApiVersions(r), 0))
        } else {
            let request = RequestKind::decode(api, &mut frame, version)?;
            super::api::handle(shared, &header, request).await?.map(|r| (r, version))
        };
        let Some((response, version)) = response else { continue };
        out.clear();
        out.put_i32(0);
        let header_version = api.response_header_version(version);
        ResponseHeader::default().with_correlation_id(header.correlation_id).encode(&mut out, header_version)?;
        response.encode(&mut out, version)?;
        let size = i32::try_from(out.len() - 4)?;
        out[..4].copy_from_slice(&size.to_be_bytes());
        write.write_all(&out).await?;
    }
}

fn speaks(api: ApiKey, version: i16) -> bool {
    APIS.iter().any(|(k, min, max)| *k == api && (*min..=*max).contains(&version))
}

pub fn api_versions() -> ApiVersionsResponse {
    let keys = APIS
        .iter()
        .map(|(k, min, max)| {
            ApiVersion::default().with_api_key(*k as i16).with_min_version(*min).with_max_version(*max)
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(keys)
}
