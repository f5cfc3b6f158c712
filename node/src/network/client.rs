//! openraft's network client over gRPC: replication as a bidirectional stream of AppendEntries,
//! heartbeats on a long-lived stream of their own, Vote and TransferLeader as unary calls, and
//! whole snapshots as a client stream of chunks.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferrokv_proto::RaftRequest;
use ferrokv_proto::SnapshotChunk;
use futures::SinkExt;
use futures::Stream;
use futures::StreamExt;
use futures::stream::FusedStream;
use openraft::RaftNetworkFactory;
use openraft::RaftNetworkV2;
use openraft::base::BoxFuture;
use openraft::base::BoxStream;
use openraft::error::NetworkError;
use openraft::error::RPCError;
use openraft::error::ReplicationClosed;
use openraft::error::StreamingError;
use openraft::error::Timeout;
use openraft::error::Unreachable;
use openraft::network::RPCOption;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::StreamAppendResult;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::network::PeerPool;
use crate::network::window::Window;
use crate::types::GroupId;
use crate::types::Member;
use crate::types::RaftId;
use crate::types::Snapshot;
use crate::types::SnapshotData;
use crate::types::TypeConfig;
use crate::types::Vote;
use crate::types::entry_len_hint;

/// Snapshot data is streamed in chunks of this size.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// How long a replication request without entries is held back for one with entries.
const COMMIT_ONLY_HOLD: Duration = Duration::from_millis(1);

/// Creates a [`PeerClient`] per target member.
#[derive(Clone)]
pub struct NetworkFactory {
    pool: PeerPool,
    group: GroupId,
    /// AppendEntries requests in flight per replication stream (see [`Window`]).
    window: usize,
}

impl NetworkFactory {
    pub fn new(pool: PeerPool, group: GroupId, window: usize) -> Self {
        NetworkFactory { pool, group, window }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: RaftId, node: &Member) -> PeerClient {
        PeerClient {
            pool: self.pool.clone(),
            group: self.group,
            target,
            addr: node.grpc_addr.clone(),
            window: self.window,
            heartbeats: None,
        }
    }
}

/// The Raft connection to one member.
pub struct PeerClient {
    pool: PeerPool,
    group: GroupId,
    target: RaftId,
    addr: String,
    window: usize,
    /// The open heartbeat stream, if any (see [`HeartbeatStream`]).
    heartbeats: Option<HeartbeatStream>,
}

/// A gRPC stream kept open for heartbeats, one request and one answer at a time. openraft
/// sends every heartbeat as a stream of its own, from one client per member that waits for
/// each answer before the next heartbeat. As a unary call each heartbeat opened an HTTP/2
/// stream with headers and trailers both ways; on this stream it is one data frame each way.
/// Heartbeats confirm every linearizable read, so under read load they are frequent.
struct HeartbeatStream {
    requests: futures::channel::mpsc::Sender<RaftRequest>,
    replies: tonic::Streaming<ferrokv_proto::RaftReply>,
}

type Rpc<T> = Result<T, RPCError<TypeConfig>>;

impl PeerClient {
    fn request<T: Serialize>(&self, msg: &T) -> Rpc<RaftRequest> {
        let payload = codec::encode(msg).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        Ok(RaftRequest { group_id: self.group, target: self.target, payload: Bytes::from(payload) })
    }

    fn client(&self) -> Rpc<ferrokv_proto::raft_client::RaftClient<tonic::transport::Channel>> {
        self.pool.raft(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    /// Run one unary call under the RPC's soft deadline and decode the reply.
    async fn unary<Resp, F, Fut>(&self, ttl: Duration, call: F) -> Rpc<Resp>
    where
        Resp: DeserializeOwned,
        F: FnOnce(ferrokv_proto::raft_client::RaftClient<tonic::transport::Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<ferrokv_proto::RaftReply>, tonic::Status>>,
    {
        let client = self.client()?;
        let reply = match tokio::time::timeout(ttl, call(client)).await {
            Err(_) => return Err(self.timeout(ttl)),
            Ok(Err(status)) => return Err(status_to_rpc(status)),
            Ok(Ok(r)) => r.into_inner(),
        };
        codec::decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    /// Send one heartbeat on the heartbeat stream (opened if need be) and wait for its answer.
    /// The stream is taken out while in use and put back only after a clean answer: a call cut
    /// short (timeout, cancellation, error) drops it, and the next heartbeat opens a new one,
    /// so an answer can never be matched with the wrong request.
    async fn heartbeat(&mut self, rpc: &AppendEntriesRequest<TypeConfig>) -> Rpc<StreamAppendResult<TypeConfig>> {
        let req = self.request(rpc)?;
        let mut stream = match self.heartbeats.take() {
            Some(stream) => stream,
            None => {
                let (requests, inbound) = futures::channel::mpsc::channel(1);
                let replies = self.client()?.stream_append(inbound).await.map_err(status_to_rpc)?.into_inner();
                HeartbeatStream { requests, replies }
            }
        };
        let closed = || RPCError::Network(NetworkError::from_string("the heartbeat stream closed".to_string()));
        stream.requests.send(req).await.map_err(|_| closed())?;
        let reply = stream.replies.message().await.map_err(status_to_rpc)?.ok_or_else(closed)?;
        let result: StreamAppendResult<TypeConfig> =
            codec::decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // The peer ends its side of the stream after a refusal (conflict, higher vote).
        if result.is_ok() {
            self.heartbeats = Some(stream);
        }
        Ok(result)
    }

    fn timeout(&self, ttl: Duration) -> RPCError<TypeConfig> {
        RPCError::Timeout(Timeout {
            action: openraft::RPCTypes::AppendEntries,
            id: 0,
            target: self.target,
            timeout: ttl,
        })
    }
}

/// The next replication request to send. In a replication stream openraft builds a request
/// without entries only to tell the follower that the commit index moved on; under steady writes
/// that is one more message each way per commit, and the follower's Raft core runs for it. Such a
/// request is held back for up to [`COMMIT_ONLY_HOLD`]: a request openraft builds meanwhile
/// carries the same or a later commit index (and entries), so it goes instead; if none comes, or
/// the stream ends (a probe is followed by nothing), the held one goes as it is. Requests are
/// self-contained (each is checked against its `prev_log_id`) and an acknowledgement covers every
/// earlier request, so leaving one out changes nothing else. Heartbeats, which confirm
/// linearizable reads, travel on their own stream and are never held.
async fn next_request<S>(input: &mut S) -> Option<AppendEntriesRequest<TypeConfig>>
where
    S: FusedStream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
{
    let mut rpc = input.next().await?;
    let deadline = tokio::time::Instant::now() + COMMIT_ONLY_HOLD;
    while rpc.entries.is_empty() {
        match tokio::time::timeout_at(deadline, input.next()).await {
            Ok(Some(later)) => rpc = later,
            Ok(None) | Err(_) => break,
        }
    }
    Some(rpc)
}

fn status_to_rpc(status: tonic::Status) -> RPCError<TypeConfig> {
    // Connection failures back off; anything else (the peer answered with an error, e.g. it is
    // not running the addressed member) is a network error retried on the next tick.
    if status.code() == tonic::Code::Unavailable {
        RPCError::Unreachable(Unreachable::new(&status))
    } else {
        RPCError::Network(NetworkError::new(&status))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<TypeConfig>> {
        let req = self.request(&rpc)?;
        self.unary(option.soft_ttl(), |mut c| async move { c.append_entries(req).await }).await
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Rpc<BoxStream<'s, Rpc<StreamAppendResult<TypeConfig>>>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
    {
        // A stream of exactly one request is a heartbeat (openraft sends each as its own
        // stream): it goes out on the long-lived heartbeat stream.
        if input.size_hint() == (1, Some(1)) {
            let mut input = input;
            return Box::pin(async move {
                let Some(rpc) = input.next().await else {
                    return Ok(Box::pin(futures::stream::empty()) as BoxStream<'s, _>);
                };
                let ttl = option.soft_ttl();
                let result = match tokio::time::timeout(ttl, self.heartbeat(&rpc)).await {
                    Err(_) => return Err(self.timeout(ttl)),
                    Ok(r) => r?,
                };
                Ok(Box::pin(futures::stream::once(async move { Ok(result) })) as BoxStream<'s, _>)
            });
        }
        Box::pin(async move {
            let (group_id, target) = (self.group, self.target);
            let mut client = self.client()?;
            let window = Arc::new(Window::new(self.window));
            let sender = window.clone();
            // The next request is only asked of openraft once the window has room, so that it
            // carries every entry appended while the earlier ones were in flight.
            let requests = futures::stream::unfold((input.fuse(), sender), move |(mut input, window)| async move {
                window.ready().await;
                let rpc = next_request(&mut input).await?;
                window.sent();
                // Encoding these structs cannot fail; if it ever did, the empty payload is refused
                // by the peer, the stream ends with an error and openraft restarts replication.
                let len_hint = 64 + rpc.entries.iter().map(entry_len_hint).sum::<usize>();
                let payload = Bytes::from(codec::encode_sized(&rpc, len_hint).unwrap_or_default());
                Some((RaftRequest { group_id, target, payload }, (input, window)))
            });
            let opened = tokio::time::timeout(option.soft_ttl(), client.stream_append(Box::pin(requests))).await;
            let replies = match opened {
                Err(_) => return Err(self.timeout(option.soft_ttl())),
                Ok(Err(status)) => return Err(status_to_rpc(status)),
                Ok(Ok(r)) => r.into_inner(),
            };
            let results = replies.map(move |item| {
                window.answered();
                match item {
                    Ok(reply) => codec::decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e))),
                    Err(status) => Err(status_to_rpc(status)),
                }
            });
            Ok(Box::pin(results) as BoxStream<'s, _>)
        })
    }

    async fn vote(&mut self, rpc: VoteRequest<TypeConfig>, option: RPCOption) -> Rpc<VoteResponse<TypeConfig>> {
        let req = self.request(&rpc)?;
        self.unary(option.soft_ttl(), |mut c| async move { c.vote(req).await }).await
    }

    async fn pre_vote(&mut self, rpc: VoteRequest<TypeConfig>, option: RPCOption) -> Rpc<VoteResponse<TypeConfig>> {
        let req = self.request(&rpc)?;
        self.unary(option.soft_ttl(), |mut c| async move { c.pre_vote(req).await }).await
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Rpc<TransferLeaderResponse<TypeConfig>> {
        let req = self.request(&rpc)?;
        self.unary(option.soft_ttl(), |mut c| async move { c.transfer_leader(req).await }).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let net = |e: &dyn std::error::Error| StreamingError::Network(NetworkError::from_string(e.to_string()));
        let meta = codec::encode(&(vote, snapshot.meta.clone())).map_err(|e| net(&e))?;
        let chunks = snapshot_chunks(snapshot.snapshot, Bytes::from(meta), self.group, self.target);
        let mut client = self.pool.raft(&self.addr).map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        // A snapshot may be large: allow the hard TTL for the whole stream.
        let send = tokio::time::timeout(option.hard_ttl(), client.install_snapshot(chunks));
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = send => match r {
                Err(_) => return Err(StreamingError::Timeout(Timeout {
                    action: openraft::RPCTypes::InstallSnapshot,
                    id: 0,
                    target: self.target,
                    timeout: option.hard_ttl(),
                })),
                Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                    return Err(StreamingError::Unreachable(Unreachable::new(&status)));
                }
                Ok(Err(status)) => return Err(net(&status)),
                Ok(Ok(r)) => r.into_inner(),
            },
        };
        codec::decode(&reply.payload).map_err(|e| net(&e))
    }
}

/// The chunks of a snapshot, read from its file one at a time as the stream is sent (the
/// meta rides on the first). A read that fails ends the stream early: the receiver then
/// refuses the snapshot (its checksum no longer matches) and the transfer is retried.
fn snapshot_chunks(
    data: SnapshotData,
    meta: Bytes,
    group_id: GroupId,
    target: RaftId,
) -> impl futures::Stream<Item = SnapshotChunk> + Send + 'static {
    let len = data.len();
    futures::stream::unfold(Some(0u64), move |offset| {
        let (data, meta) = (data.clone(), meta.clone());
        async move {
            let offset = offset?;
            let read = tokio::task::spawn_blocking(move || data.read_chunk(offset, SNAPSHOT_CHUNK)).await;
            let piece = match read.map_err(std::io::Error::other).and_then(|r| r) {
                Ok(piece) => piece,
                Err(e) => {
                    tracing::warn!("reading snapshot data to send: {e}");
                    return None;
                }
            };
            let next = offset + piece.len() as u64;
            let meta = if offset == 0 { meta } else { Bytes::new() };
            let chunk = SnapshotChunk { group_id, target, meta, data: piece };
            Some((chunk, (next < len).then_some(next)))
        }
    })
}

#[cfg(test)]
mod tests {
    use openraft::EntryPayload;
    use openraft::testing::log_id;

    use super::*;
    use crate::types::Entry;

    /// A request with entries `first..=last`, or without any when `last < first`.
    fn request(first: u64, last: u64, committed: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: first.checked_sub(1).map(|i| log_id::<TypeConfig>(1, 1, i)),
            leader_commit: Some(log_id::<TypeConfig>(1, 1, committed)),
            entries: (first..=last)
                .map(|i| Entry { log_id: log_id::<TypeConfig>(1, 1, i), payload: EntryPayload::Blank })
                .collect(),
        }
    }

    /// (first entry index, last entry index, commit index) of a request: what tells them apart.
    type Shape = (u64, u64, u64);

    fn shape(rpc: &AppendEntriesRequest<TypeConfig>) -> Shape {
        let first = rpc.prev_log_id.map_or(0, |l| l.index) + 1;
        (first, first + rpc.entries.len() as u64 - 1, rpc.leader_commit.map_or(0, |l| l.index))
    }

    /// The next request's shape, failing the test if it takes a second.
    async fn next_within_a_second(
        input: &mut (impl FusedStream<Item = AppendEntriesRequest<TypeConfig>> + Unpin),
    ) -> Option<Shape> {
        let next = tokio::time::timeout(Duration::from_secs(1), next_request(input)).await;
        next.expect("a request within a second").as_ref().map(shape)
    }

    #[tokio::test]
    async fn requests_with_entries_go_as_they_are() {
        let mut input = futures::stream::iter([request(1, 3, 0), request(4, 4, 3)]).fuse();
        assert_eq!(next_within_a_second(&mut input).await, Some((1, 3, 0)));
        assert_eq!(next_within_a_second(&mut input).await, Some((4, 4, 3)));
        assert_eq!(next_within_a_second(&mut input).await, None);
    }

    #[tokio::test]
    async fn a_commit_only_request_gives_way_to_a_later_request() {
        let mut input = futures::stream::iter([request(4, 3, 3), request(4, 3, 4), request(4, 5, 4)]).fuse();
        assert_eq!(next_within_a_second(&mut input).await, Some((4, 5, 4)));
        assert_eq!(next_within_a_second(&mut input).await, None);
    }

    #[tokio::test]
    async fn a_commit_only_request_goes_when_nothing_follows() {
        // The stream ends: at once.
        let mut input = futures::stream::iter([request(4, 3, 3)]).fuse();
        assert_eq!(next_within_a_second(&mut input).await, Some((4, 3, 3)));
        // Nothing comes: after the hold.
        let mut input = futures::stream::iter([request(4, 3, 3)])
            .chain(futures::stream::pending::<AppendEntriesRequest<TypeConfig>>())
            .fuse();
        let started = std::time::Instant::now();
        assert_eq!(next_within_a_second(&mut input).await, Some((4, 3, 3)));
        assert!(started.elapsed() >= COMMIT_ONLY_HOLD);
    }

    #[tokio::test]
    async fn a_snapshot_is_sent_in_chunks_that_rebuild_it() {
        use crate::command::Command;
        use crate::command::Condition;
        use crate::state::KvState;
        use crate::storage::Incoming;
        use crate::storage::snapshot;

        let mut kv = KvState::default();
        for i in 0..12_000u64 {
            let value = Bytes::from(vec![i as u8; 200]);
            let put = Command::Put {
                key: format!("k/{i:06}"),
                value,
                content_type: None,
                ttl_ms: None,
                condition: Condition::None,
                now_ms: 1,
            };
            kv.apply(i + 1, &put);
        }
        let whole = snapshot::encode(&kv).unwrap();
        assert!(whole.len() > 2 * SNAPSHOT_CHUNK, "the snapshot must take several chunks");
        let dir = tempfile::tempdir().unwrap();
        let mut sent = Incoming::create(dir.path()).unwrap();
        sent.append(&whole).unwrap();
        let sent = sent.finish().unwrap();

        let chunks: Vec<SnapshotChunk> = snapshot_chunks(sent, Bytes::from_static(b"meta"), 0, 2).collect().await;
        assert_eq!(chunks.len(), whole.len().div_ceil(SNAPSHOT_CHUNK));
        assert_eq!(chunks[0].meta, Bytes::from_static(b"meta"));
        assert!(chunks[1..].iter().all(|c| c.meta.is_empty() && c.group_id == 0 && c.target == 2));
        let mut received = Incoming::create(dir.path()).unwrap();
        for c in &chunks {
            received.append(&c.data).unwrap();
        }
        assert_eq!(received.finish().unwrap().decode().unwrap(), kv);
    }
}
