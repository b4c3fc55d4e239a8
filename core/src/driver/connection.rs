//! Connection tasks: turn transmits into gRPC calls and replies.
//!
//! - Store addresses get `connections_per_store` tasks, used round-robin. Each keeps one
//!   connection and one BatchCommands stream; every transmit already queued when the task
//!   wakes goes out in one BatchCommands message (up to `max_batch_size`), ids are the core's
//!   request ids, and a receiver task matches answers (in any order) back to them. When the
//!   stream breaks, only its pending requests fail; the next transmit dials and opens a new
//!   stream. Commands the stream has no arm for go as unary calls.
//! - PD addresses get one task: TSO requests go over a Tso stream (answers come back in
//!   order), everything else as unary calls.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_channel::mpsc;
use futures_core::Stream;
use prost::Message as _;
use tikv_proto::frame::Framed;
use tikv_proto::rpc::{self, CallOptions, Channel, RpcError};
use tikv_proto::{pdpb, tikvpb};

use super::Reply;
use crate::machine::Transmit;

use crate::config::Config;
use crate::rpc::{PdResponse, Request, Response, StoreResponse};
use crate::runtime::Runtime;

/// Routes transmits to connection tasks, spawning them on first use.
pub(crate) struct Connections<R: Runtime> {
    runtime: R,
    replies: mpsc::UnboundedSender<Reply>,
    config: Arc<Config>,
    stores: BTreeMap<String, (Vec<mpsc::UnboundedSender<Transmit>>, usize)>,
    pds: BTreeMap<String, mpsc::UnboundedSender<Transmit>>,
}

impl<R: Runtime> Connections<R> {
    pub(crate) fn new(runtime: R, replies: mpsc::UnboundedSender<Reply>, config: Config) -> Self {
        Self {
            runtime,
            replies,
            config: Arc::new(config),
            stores: BTreeMap::new(),
            pds: BTreeMap::new(),
        }
    }

    /// Ends a drain: the next drain's requests to each store use its next connection, so load
    /// spreads over the connections while each drain still batches into one message.
    pub(crate) fn end_drain(&mut self) {
        for (_, next) in self.stores.values_mut() {
            *next = next.wrapping_add(1);
        }
    }

    /// Hands `transmit` to the task for its address.
    pub(crate) fn send(&mut self, transmit: Transmit) {
        match &transmit.request {
            Request::Pd(_) => {
                let sender = self.pds.entry(transmit.address.clone()).or_insert_with(|| {
                    let (tx, rx) = mpsc::unbounded();
                    self.runtime.spawn(Box::pin(pd_task(
                        self.runtime.clone(),
                        transmit.address.clone(),
                        rx,
                        self.replies.clone(),
                        Arc::clone(&self.config),
                    )));
                    tx
                });
                if let Err(err) = sender.unbounded_send(transmit) {
                    // The task ended (it never does while the sender lives); answer for it.
                    let transmit = err.into_inner();
                    self.pds.remove(&transmit.address);
                    fail(
                        &self.replies,
                        transmit.id,
                        RpcError::ConnectionLost("pd task ended".into()),
                    );
                }
            }
            Request::Store(_) | Request::Health(_) => {
                let count = self.config.connections_per_store.max(1);
                let (senders, next) =
                    self.stores
                        .entry(transmit.address.clone())
                        .or_insert_with(|| {
                            let senders = (0..count)
                                .map(|index| {
                                    let (tx, rx) = mpsc::unbounded();
                                    self.runtime.spawn(Box::pin(store_task(
                                        self.runtime.clone(),
                                        transmit.address.clone(),
                                        index,
                                        rx,
                                        self.replies.clone(),
                                        Arc::clone(&self.config),
                                    )));
                                    tx
                                })
                                .collect();
                            (senders, 0)
                        });
                // One connection per store per drain: everything the machine produced for this
                // store in one drain goes out as one BatchCommands message. `end_drain` moves
                // on to the next connection for the next drain.
                let index = *next % senders.len().max(1);
                let Some(sender) = senders.get(index) else {
                    fail(
                        &self.replies,
                        transmit.id,
                        RpcError::ConnectionLost("no connection".into()),
                    );
                    return;
                };
                if let Err(err) = sender.unbounded_send(transmit) {
                    let transmit = err.into_inner();
                    self.stores.remove(&transmit.address);
                    fail(
                        &self.replies,
                        transmit.id,
                        RpcError::ConnectionLost("store task ended".into()),
                    );
                }
            }
        }
    }
}

fn fail(replies: &mpsc::UnboundedSender<Reply>, id: crate::machine::RequestId, err: RpcError) {
    let _ = replies.unbounded_send((id, Err(err)));
}

/// Waits for the next transmit, then takes every one already queued (up to `max`).
async fn next_batch(
    rx: &mut mpsc::UnboundedReceiver<Transmit>,
    max: usize,
) -> Option<Vec<Transmit>> {
    let first = std::future::poll_fn(|cx| Pin::new(&mut *rx).poll_next(cx)).await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(transmit) => batch.push(transmit),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// Most requests one BatchCommands stream may have unanswered before it is replaced.
const MAX_PENDING_PER_STREAM: usize = 65_536;

/// The sending half of a Tso stream and the ids of its requests, in order.
type TsoStream<C> = (<C as Channel>::Sender, Arc<Mutex<VecDeque<u64>>>);

/// Request ids waiting on one BatchCommands stream, shared with its receiver task; `None` once
/// the receiver has ended (the stream is dead and must be replaced).
type PendingIds = Arc<Mutex<Option<BTreeSet<u64>>>>;

struct BatchStream<C: Channel> {
    sender: C::Sender,
    pending: PendingIds,
}

async fn store_task<R: Runtime>(
    runtime: R,
    address: String,
    index: usize,
    mut rx: mpsc::UnboundedReceiver<Transmit>,
    replies: mpsc::UnboundedSender<Reply>,
    config: Arc<Config>,
) {
    let mut channel: Option<R::Channel> = None;
    let mut stream: Option<BatchStream<R::Channel>> = None;
    let max_batch = config.max_batch_size.max(1);
    while let Some(batch) = next_batch(&mut rx, max_batch).await {
        let mut entries = Vec::with_capacity(batch.len());
        let mut unary = Vec::new();
        let mut health = Vec::new();
        for transmit in batch {
            let id = transmit.id;
            let request = match transmit.request {
                Request::Store(request) => request,
                Request::Health(probe) => {
                    health.push((id, probe, transmit.timeout));
                    continue;
                }
                Request::Pd(_) => {
                    fail(
                        &replies,
                        id,
                        RpcError::Protocol("PD request sent to a store".into()),
                    );
                    continue;
                }
            };
            match request.into_batch() {
                Ok(cmd) => entries.push((id, cmd)),
                Err(request) => unary.push((id, request, transmit.timeout)),
            }
        }

        // (Re)connect when needed.
        if channel.as_ref().is_none_or(Channel::is_closed) {
            stream = None;
            match runtime.connect(&address).await {
                Ok(connected) => channel = Some(connected),
                Err(err) => {
                    channel = None;
                    for (id, _) in entries {
                        fail(&replies, id, err.clone());
                    }
                    for (id, _, _) in unary {
                        fail(&replies, id, err.clone());
                    }
                    for (id, _, _) in health {
                        fail(&replies, id, err.clone());
                    }
                    continue;
                }
            }
        }
        let Some(connected) = channel.clone() else {
            continue;
        };

        for (id, request, timeout) in unary {
            let channel = connected.clone();
            let replies = replies.clone();
            let limit = config.max_message_size;
            runtime.spawn(Box::pin(async move {
                let result = match request.encode(limit) {
                    Ok(framed) => {
                        let path = request.path();
                        match channel
                            .unary(path, framed, CallOptions::with_timeout(timeout))
                            .await
                        {
                            Ok(payload) => request
                                .decode_response(payload)
                                .map(|r| Response::Store(Box::new(r))),
                            Err(err) => Err(err),
                        }
                    }
                    Err(err) => Err(RpcError::Frame(err)),
                };
                let _ = replies.unbounded_send((id, result));
            }));
        }
        for (id, probe, timeout) in health {
            let channel = connected.clone();
            let replies = replies.clone();
            runtime.spawn(Box::pin(async move {
                use tikv_proto::grpc::health::v1 as health;
                let result = rpc::call(
                    &channel,
                    health::health::CHECK,
                    &probe,
                    CallOptions::with_timeout(timeout),
                    1 << 20,
                )
                .await
                .map(Response::Health);
                let _ = replies.unbounded_send((id, result));
            }));
        }
        if entries.is_empty() {
            continue;
        }

        let registered = stream.as_ref().is_some_and(|open| {
            open.pending
                .lock()
                .is_ok_and(|mut pending| match pending.as_mut() {
                    // Ids of requests the machine gave up on stay until answered; a stream
                    // collecting too many unanswered ones is replaced (the old one fails its
                    // leftovers when its receiver ends).
                    Some(pending) if pending.len() < MAX_PENDING_PER_STREAM => {
                        pending.extend(entries.iter().map(|(id, _)| id.0));
                        true
                    }
                    _ => false,
                })
        });
        if !registered {
            // No stream yet, or it died since the last batch: open one for this batch.
            stream = None;
            match open_batch_stream(&runtime, &connected, index, &replies).await {
                Ok(opened) => {
                    if let Ok(mut pending) = opened.pending.lock() {
                        if let Some(pending) = pending.as_mut() {
                            pending.extend(entries.iter().map(|(id, _)| id.0));
                        }
                    }
                    stream = Some(opened);
                }
                Err(err) => {
                    for (id, _) in entries {
                        fail(&replies, id, err.clone());
                    }
                    continue;
                }
            }
        }
        let Some(open) = stream.as_mut() else {
            continue;
        };
        let mut message = tikvpb::BatchCommandsRequest {
            requests: Vec::with_capacity(entries.len()),
            request_ids: Vec::with_capacity(entries.len()),
            ..Default::default()
        };
        let ids: Vec<_> = entries.iter().map(|(id, _)| *id).collect();
        for (id, cmd) in entries {
            message.request_ids.push(id.0);
            message
                .requests
                .push(tikvpb::batch_commands_request::Request { cmd: Some(cmd) });
        }
        let sent = match Framed::encode(&message, config.max_message_size) {
            Ok(framed) => rpc::send(&mut open.sender, framed).await,
            Err(err) => Err(RpcError::Frame(err)),
        };
        if let Err(err) = sent {
            // This stream is broken: fail what it carried; the next batch opens a new one.
            if let Ok(mut pending) = open.pending.lock() {
                if let Some(pending) = pending.as_mut() {
                    for id in &ids {
                        pending.remove(&id.0);
                    }
                }
            }
            for id in ids {
                fail(&replies, id, err.clone());
            }
            stream = None;
        }
    }
}

async fn open_batch_stream<R: Runtime>(
    runtime: &R,
    channel: &R::Channel,
    index: usize,
    replies: &mpsc::UnboundedSender<Reply>,
) -> Result<BatchStream<R::Channel>, RpcError> {
    let options = CallOptions::default().metadata("tikv-batch-conn-index", index.to_string());
    let (sender, receiver) = channel
        .open_stream(tikvpb::tikv::BATCH_COMMANDS.path(), options)
        .await?;
    let pending: PendingIds = Arc::new(Mutex::new(Some(BTreeSet::new())));
    runtime.spawn(Box::pin(batch_receiver::<R::Channel>(
        receiver,
        Arc::clone(&pending),
        replies.clone(),
    )));
    Ok(BatchStream { sender, pending })
}

/// Reads BatchCommands responses and routes each entry to its request id; when the stream
/// ends, fails every request still pending on it.
async fn batch_receiver<C: Channel>(
    mut receiver: C::Receiver,
    pending: PendingIds,
    replies: mpsc::UnboundedSender<Reply>,
) {
    let failure = loop {
        let payload = match rpc::recv(&mut receiver).await {
            Some(Ok(payload)) => payload,
            Some(Err(err)) => break err,
            None => break RpcError::ConnectionLost("batch stream ended".into()),
        };
        let response = match tikvpb::BatchCommandsResponse::decode(payload) {
            Ok(response) => response,
            Err(err) => {
                break RpcError::Decode {
                    message_type: "tikvpb.BatchCommandsResponse",
                    reason: err.to_string(),
                };
            }
        };
        for (entry, id) in response.responses.into_iter().zip(response.request_ids) {
            let known = pending
                .lock()
                .map(|mut p| p.as_mut().is_some_and(|p| p.remove(&id)))
                .unwrap_or(false);
            if !known {
                // Already failed or never ours: drop it, as client-go does.
                continue;
            }
            let result = match entry.cmd.and_then(StoreResponse::from_batch) {
                Some(response) => Ok(Response::Store(Box::new(response))),
                None => Err(RpcError::Protocol(
                    "batch response entry without a known arm".into(),
                )),
            };
            let _ = replies.unbounded_send((crate::machine::RequestId(id), result));
        }
    };
    let orphans: Vec<u64> = pending
        .lock()
        .map(|mut p| {
            p.take()
                .map(|ids| ids.into_iter().collect())
                .unwrap_or_default()
        })
        .unwrap_or_default();
    for id in orphans {
        fail(&replies, crate::machine::RequestId(id), failure.clone());
    }
}

async fn pd_task<R: Runtime>(
    runtime: R,
    address: String,
    mut rx: mpsc::UnboundedReceiver<Transmit>,
    replies: mpsc::UnboundedSender<Reply>,
    config: Arc<Config>,
) {
    let mut channel: Option<R::Channel> = None;
    let mut tso: Option<TsoStream<R::Channel>> = None;
    while let Some(batch) = next_batch(&mut rx, usize::MAX).await {
        if channel.as_ref().is_none_or(Channel::is_closed) {
            tso = None;
            match runtime.connect(&address).await {
                Ok(connected) => channel = Some(connected),
                Err(err) => {
                    channel = None;
                    for transmit in batch {
                        fail(&replies, transmit.id, err.clone());
                    }
                    continue;
                }
            }
        }
        let Some(connected) = channel.clone() else {
            continue;
        };
        for transmit in batch {
            let Request::Pd(request) = transmit.request else {
                fail(
                    &replies,
                    transmit.id,
                    RpcError::Protocol("store request sent to PD".into()),
                );
                continue;
            };
            let framed = match request.encode(config.max_message_size) {
                Ok(framed) => framed,
                Err(err) => {
                    fail(&replies, transmit.id, RpcError::Frame(err));
                    continue;
                }
            };
            if matches!(*request, crate::rpc::PdRequest::Tso(_)) {
                if tso.is_none() {
                    match connected
                        .open_stream(pdpb::pd::TSO.path(), CallOptions::default())
                        .await
                    {
                        Ok((sender, receiver)) => {
                            let order = Arc::new(Mutex::new(VecDeque::new()));
                            runtime.spawn(Box::pin(tso_receiver::<R::Channel>(
                                receiver,
                                Arc::clone(&order),
                                replies.clone(),
                            )));
                            tso = Some((sender, order));
                        }
                        Err(err) => {
                            fail(&replies, transmit.id, err);
                            continue;
                        }
                    }
                }
                let Some((sender, order)) = tso.as_mut() else {
                    continue;
                };
                if let Ok(mut order) = order.lock() {
                    order.push_back(transmit.id.0);
                }
                if let Err(err) = rpc::send(sender, framed).await {
                    if let Ok(mut order) = order.lock() {
                        order.retain(|id| *id != transmit.id.0);
                    }
                    fail(&replies, transmit.id, err);
                    tso = None;
                }
                continue;
            }
            let channel = connected.clone();
            let replies = replies.clone();
            let timeout = transmit.timeout;
            let id = transmit.id;
            runtime.spawn(Box::pin(async move {
                let result = match channel
                    .unary(request.path(), framed, CallOptions::with_timeout(timeout))
                    .await
                {
                    Ok(payload) => request
                        .decode_response(payload)
                        .map(|r| Response::Pd(Box::new(r))),
                    Err(err) => Err(err),
                };
                let _ = replies.unbounded_send((id, result));
            }));
        }
    }
}

/// Reads Tso responses; PD answers them in request order.
async fn tso_receiver<C: Channel>(
    mut receiver: C::Receiver,
    order: Arc<Mutex<VecDeque<u64>>>,
    replies: mpsc::UnboundedSender<Reply>,
) {
    let failure = loop {
        let payload = match rpc::recv(&mut receiver).await {
            Some(Ok(payload)) => payload,
            Some(Err(err)) => break err,
            None => break RpcError::ConnectionLost("tso stream ended".into()),
        };
        let Some(id) = order.lock().ok().and_then(|mut o| o.pop_front()) else {
            break RpcError::Protocol("TSO response without a request".into());
        };
        let result = rpc::decode::<pdpb::TsoResponse>(payload)
            .map(|tso| Response::Pd(Box::new(PdResponse::Tso(tso))));
        let _ = replies.unbounded_send((crate::machine::RequestId(id), result));
    };
    let orphans: Vec<u64> = order
        .lock()
        .map(|mut o| o.drain(..).collect())
        .unwrap_or_default();
    for id in orphans {
        fail(&replies, crate::machine::RequestId(id), failure.clone());
    }
}
