//! The driver task: it owns the [`Engine`], feeds it requests, completions and
//! timeouts, and carries out the commands it emits — peer requests as tokio tasks,
//! storage operations on the worker threads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoal_proto::wire::{decode_response, encode_request, PeerResponse, Request, Response};
use shoal_proto::{
    Command, Engine, InboundId, RequestId, SendError, StorageFailure, StorageOp, Time,
};
use shoal_ring::NodeId;
use shoal_storage::Storage;
use shoal_transport::{Endpoint, TransportError};
use tokio::sync::{mpsc, oneshot, watch};

use super::{Completion, Inbound};
use shoal_executor::Executor;

/// Wall-clock time for the engine, never going backwards.
#[derive(Debug)]
pub(super) struct Clock {
    last: Time,
}

impl Clock {
    /// A clock that has not been read yet.
    pub(super) fn new() -> Clock {
        Clock { last: Time::ZERO }
    }

    /// The current time, or the last time returned if the wall clock went back.
    pub(super) fn now(&mut self) -> Time {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let t = Time::from_duration(wall);
        if t > self.last {
            self.last = t;
        }
        self.last
    }
}

/// A storage worker thread: runs the operations the driver queues, one at a time, until
/// the queue closes or the driver is gone.
pub(super) fn storage_worker<S: Storage>(
    exec: Arc<Executor<S>>,
    rx: crossbeam::channel::Receiver<(RequestId, StorageOp)>,
    done: mpsc::UnboundedSender<Completion>,
) {
    while let Ok((id, op)) = rx.recv() {
        let name = op.op_name();
        let start = Instant::now();
        let result = exec.execute(op);
        metrics::histogram!(crate::metrics::EXECUTOR_OP_DURATION_SECONDS, "op" => name)
            .record(start.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!(crate::metrics::EXECUTOR_ERRORS_TOTAL, "op" => name).increment(1);
        }
        if done.send(Completion::Storage { id, result }).is_err() {
            return;
        }
    }
}

/// The engine and what it needs to carry out its commands.
pub(super) struct Driver {
    engine: Engine,
    clock: Clock,
    inbound: HashMap<u64, oneshot::Sender<Response>>,
    next_inbound: u64,
    endpoint: Endpoint,
    addrs: HashMap<NodeId, SocketAddr>,
    storage_tx: crossbeam::channel::Sender<(RequestId, StorageOp)>,
    done_tx: mpsc::UnboundedSender<Completion>,
}

impl Driver {
    /// A driver for `engine`, sending to peers over `endpoint` at `addrs`, storage
    /// operations to the workers through `storage_tx`, and completions to itself through
    /// `done_tx`.
    pub(super) fn new(
        engine: Engine,
        clock: Clock,
        endpoint: Endpoint,
        addrs: HashMap<NodeId, SocketAddr>,
        storage_tx: crossbeam::channel::Sender<(RequestId, StorageOp)>,
        done_tx: mpsc::UnboundedSender<Completion>,
    ) -> Driver {
        Driver {
            engine,
            clock,
            inbound: HashMap::new(),
            next_inbound: 1,
            endpoint,
            addrs,
            storage_tx,
            done_tx,
        }
    }

    /// Run until shutdown: admit queued requests, feed completions and timeouts to the
    /// engine, and carry out its commands after each.
    pub(super) async fn run(
        mut self,
        mut input: mpsc::Receiver<Inbound>,
        mut done: mpsc::UnboundedReceiver<Completion>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let wait = match self.engine.poll_timeout() {
                Some(at) => at.saturating_since(self.clock.now()),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(c) = done.recv() => self.complete(c),
                Some(i) = input.recv() => self.admit(i),
                _ = tokio::time::sleep(wait) => {
                    let now = self.clock.now();
                    self.engine.handle_timeout(now);
                }
            }
            self.drain();
            metrics::gauge!(crate::metrics::DRIVER_INFLIGHT_REQUESTS)
                .set(self.engine.inflight() as f64);
            metrics::gauge!(crate::metrics::DRIVER_PENDING_COMMANDS)
                .set(self.engine.pending_commands() as f64);
            metrics::gauge!(crate::metrics::DRIVER_QUEUE_DEPTH, "queue" => "storage")
                .set(self.storage_tx.len() as f64);
        }
    }

    fn admit(&mut self, i: Inbound) {
        let id = self.next_inbound;
        self.next_inbound += 1;
        self.inbound.insert(id, i.reply);
        let now = self.clock.now();
        self.engine
            .handle_request(now, InboundId(id), i.from, i.request);
    }

    fn complete(&mut self, c: Completion) {
        let now = self.clock.now();
        match c {
            Completion::Response { id, result } => self.engine.handle_response(now, id, result),
            Completion::Storage { id, result } => self.engine.handle_storage(now, id, result),
        }
    }

    fn drain(&mut self) {
        while let Some(cmd) = self.engine.poll_command() {
            match cmd {
                Command::Respond { id, response } => {
                    if let Some(tx) = self.inbound.remove(&id.0) {
                        let _ = tx.send(response);
                    }
                }
                Command::Storage { id, op } => {
                    // The queue is bounded and the driver never blocks on it: an op that
                    // finds it full fails at once, like a storage error.
                    let refused = match self.storage_tx.try_send((id, op)) {
                        Ok(()) => None,
                        Err(crossbeam::channel::TrySendError::Full((id, _))) => {
                            Some((id, "storage queue full"))
                        }
                        Err(crossbeam::channel::TrySendError::Disconnected((id, _))) => {
                            Some((id, "storage workers stopped"))
                        }
                    };
                    if let Some((id, why)) = refused {
                        let _ = self.done_tx.send(Completion::Storage {
                            id,
                            result: Err(StorageFailure::Engine(why.into())),
                        });
                    }
                }
                Command::Send {
                    id,
                    to,
                    request,
                    timeout,
                } => {
                    let Some(addr) = self.addrs.get(&to).copied() else {
                        let _ = self.done_tx.send(Completion::Response {
                            id,
                            result: Err(SendError::Unreachable(format!("no address for {to}"))),
                        });
                        continue;
                    };
                    let endpoint = self.endpoint.clone();
                    let done = self.done_tx.clone();
                    let op = request.op_name();
                    let payload = encode_request(&Request::Peer(request));
                    tokio::spawn(async move {
                        let result = match endpoint.request(addr, Some(&to), payload, timeout).await
                        {
                            Ok(bytes) => match decode_response(&bytes) {
                                Ok(Response::Peer(p)) => Ok(p),
                                Ok(Response::Error(e)) => Ok(PeerResponse::Error(e)),
                                // The answer to a forwarded client request.
                                Ok(Response::Client(c)) => Ok(PeerResponse::Client(c)),
                                Err(e) => Err(SendError::Invalid(e.to_string())),
                            },
                            Err(TransportError::Timeout { .. }) => Err(SendError::Timeout),
                            Err(e) if e.is_not_delivered() => {
                                Err(SendError::Unreachable(e.to_string()))
                            }
                            Err(e) => Err(SendError::Lost(e.to_string())),
                        };
                        let label = result.as_ref().map_or_else(SendError::label, |_| "ok");
                        metrics::counter!(crate::metrics::PEER_REQUESTS_TOTAL, "op" => op, "result" => label)
                            .increment(1);
                        let _ = done.send(Completion::Response { id, result });
                    });
                }
            }
        }
    }
}
