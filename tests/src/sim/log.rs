//! The event log: one line per event, in virtual time, decoded enough to read. Its
//! xxh3 digest fingerprints a run: the same seed must give the same digest.

use shoal_proto::wire::{
    AaeRequest, AaeResponse, ClientRequest, ClientResponse, PeerRequest, PeerResponse, Response,
};
use shoal_proto::{Object, SendError, SiblingValue, StorageOp, StorageReply, StorageResult, Time};
use xxhash_rust::xxh3::Xxh3Default;

use super::config::EPOCH;
use crate::history::{show_context, ShowDot};

/// Lines of a run (kept only when asked for) and their running digest.
pub(crate) struct EventLog {
    hasher: Xxh3Default,
    lines: Option<Vec<String>>,
}

impl EventLog {
    /// A log that keeps its lines when `keep` is set.
    pub(crate) fn new(keep: bool) -> EventLog {
        EventLog {
            hasher: Xxh3Default::new(),
            lines: keep.then(Vec::new),
        }
    }

    /// Add a line: time since the start of the run, who, what.
    pub(crate) fn line(&mut self, now: Time, who: &str, what: &str) {
        let t = now.saturating_since(EPOCH);
        let line = format!(
            "{:>4}.{:06} {who:<4} {what}",
            t.as_secs(),
            t.subsec_micros()
        );
        self.hasher.update(line.as_bytes());
        self.hasher.update(b"\n");
        if let Some(lines) = &mut self.lines {
            lines.push(line);
        }
    }

    /// The digest of every line so far.
    pub(crate) fn digest(&self) -> u64 {
        self.hasher.digest()
    }

    /// The kept lines (empty unless kept).
    pub(crate) fn take_lines(&mut self) -> Vec<String> {
        self.lines.take().unwrap_or_default()
    }
}

fn text(bytes: &[u8]) -> String {
    crate::checkers::show_value(bytes)
}

/// An object as its sibling values with dots.
pub(crate) fn object(obj: &Object) -> String {
    let sibs: Vec<String> = obj
        .siblings()
        .iter()
        .map(|s| match &s.value {
            SiblingValue::Data(v) => format!("{}@{}", text(v), ShowDot(s.dot)),
            SiblingValue::Tombstone => format!("<tomb>@{}", ShowDot(s.dot)),
        })
        .collect();
    format!("[{}]", sibs.join(" "))
}

fn opt_object(obj: &Option<Object>) -> String {
    obj.as_ref().map(object).unwrap_or_else(|| "none".into())
}

/// A client request.
pub(crate) fn client_request(req: &ClientRequest) -> String {
    match req {
        ClientRequest::Get { key, options } => {
            format!("get {} r={:?}", text(key), options.r)
        }
        ClientRequest::GetReplica { key } => format!("get_replica {}", text(key)),
        ClientRequest::Put {
            key,
            value,
            context,
            options,
        } => format!(
            "put {} {} ctx={} w={:?}",
            text(key),
            text(value),
            context.as_ref().map(show_context).unwrap_or("-".into()),
            options.w
        ),
        ClientRequest::Delete {
            key,
            context,
            options,
        } => format!(
            "delete {} ctx={} w={:?}",
            text(key),
            context.as_ref().map(show_context).unwrap_or("-".into()),
            options.w
        ),
        other => other.op_name().to_owned(),
    }
}

/// A client response.
pub(crate) fn client_response(resp: &ClientResponse) -> String {
    match resp {
        ClientResponse::Get(r) => format!(
            "found={} values={:?} ctx={}",
            r.found,
            r.values.iter().map(|v| text(v)).collect::<Vec<_>>(),
            show_context(&r.context)
        ),
        ClientResponse::Put(r) => format!("put ok ctx={}", show_context(&r.context)),
        ClientResponse::Delete(r) => format!("delete ok ctx={}", show_context(&r.context)),
        ClientResponse::Replica(r) => format!(
            "copy (layout {}) found={} values={:?} ctx={}",
            r.layout_version,
            r.get.found,
            r.get.values.iter().map(|v| text(v)).collect::<Vec<_>>(),
            show_context(&r.get.context)
        ),
        ClientResponse::Error(e) => format!("error: {e}"),
        // Cluster info, status and whatever the protocol adds: the simulated clients
        // never ask for them.
        other => short_debug(other),
    }
}

/// The start of a value's debug form, for messages the simulator only passes along.
fn short_debug(value: &impl std::fmt::Debug) -> String {
    format!("{value:?}").chars().take(60).collect()
}

/// A node-to-node request.
pub(crate) fn peer_request(req: &PeerRequest) -> String {
    match req {
        PeerRequest::Forward(c) => format!("forward({})", client_request(c)),
        PeerRequest::Replicate {
            partition,
            key,
            object: o,
            hint_for,
        } => format!(
            "replicate p{} {} {}{}",
            partition.0,
            text(key),
            object(o),
            hint_for
                .as_ref()
                .map(|h| format!(" hint_for={h}"))
                .unwrap_or_default()
        ),
        PeerRequest::Read {
            partition,
            key,
            hint_for,
        } => format!(
            "read p{} {}{}",
            partition.0,
            text(key),
            hint_for
                .as_ref()
                .map(|h| format!(" hint_for={h}"))
                .unwrap_or_default()
        ),
        PeerRequest::Aae(a) => aae_request(a),
        // Gossip, probes and whatever the protocol adds: the name says enough.
        other => other.op_name().to_owned(),
    }
}

fn keys(keys: &[Vec<u8>]) -> String {
    let names: Vec<String> = keys.iter().map(|k| text(k)).collect();
    names.join(",")
}

/// An anti-entropy request: partition and what it asks for.
fn aae_request(req: &AaeRequest) -> String {
    match req {
        AaeRequest::Nodes {
            partition,
            level,
            indices,
        } => format!(
            "aae_nodes p{} level {level} ({} nodes)",
            partition.0,
            indices.len()
        ),
        AaeRequest::Segments {
            partition,
            segments,
        } => format!(
            "aae_segments p{} ({} segments)",
            partition.0,
            segments.len()
        ),
        AaeRequest::Fetch { partition, keys: k } => {
            format!("aae_fetch p{} [{}]", partition.0, keys(k))
        }
        AaeRequest::Push { partition, objects } => {
            let shown: Vec<String> = objects
                .iter()
                .map(|(k, o)| format!("{} {}", text(k), object(o)))
                .collect();
            format!("aae_push p{} [{}]", partition.0, shown.join(", "))
        }
        AaeRequest::Digests { partition, keys: k } => {
            format!("aae_digests p{} [{}]", partition.0, keys(k))
        }
        AaeRequest::Reap { partition, keys: k } => {
            let names: Vec<Vec<u8>> = k.iter().map(|(key, _)| key.clone()).collect();
            format!("aae_reap p{} [{}]", partition.0, keys(&names))
        }
    }
}

/// An anti-entropy response, in brief.
fn aae_response(resp: &AaeResponse) -> String {
    match resp {
        AaeResponse::Nodes(h) => format!("{} node hashes", h.len()),
        AaeResponse::Segments(s) => {
            let pairs: usize = s.iter().map(|(_, l)| l.len()).sum();
            format!("{} segments, {pairs} keys", s.len())
        }
        AaeResponse::Objects(o) => format!(
            "{} objects ({} present)",
            o.len(),
            o.iter().filter(|(_, x)| x.is_some()).count()
        ),
        AaeResponse::Pushed(n) => format!("pushed, {n} changed"),
        AaeResponse::Digests(d) => format!("{} digests", d.len()),
        AaeResponse::Reaped(n) => format!("reaped {n}"),
    }
}

/// A node-to-node response.
pub(crate) fn peer_response(resp: &PeerResponse) -> String {
    match resp {
        PeerResponse::Client(c) => format!("client({})", client_response(c)),
        PeerResponse::Ack => "ack".into(),
        PeerResponse::Object(o) => format!("object {}", opt_object(o)),
        PeerResponse::Error(e) => format!("error: {e}"),
        PeerResponse::Pong => "pong".into(),
        PeerResponse::Aae(a) => aae_response(a),
        // Gossip views and whatever the protocol adds.
        other => short_debug(other),
    }
}

/// The outcome of a send.
pub(crate) fn send_result(result: &Result<PeerResponse, SendError>) -> String {
    match result {
        Ok(r) => peer_response(r),
        Err(SendError::Timeout) => "timeout".into(),
        Err(SendError::Unreachable(why)) => format!("unreachable: {why}"),
        Err(SendError::Lost(why)) => format!("lost: {why}"),
        Err(SendError::Invalid(why)) => format!("invalid: {why}"),
    }
}

/// Any response a node gives.
pub(crate) fn response(resp: &Response) -> String {
    match resp {
        Response::Client(c) => client_response(c),
        Response::Stamped {
            layout_version,
            response,
        } => format!("{} (layout {layout_version})", client_response(response)),
        Response::Peer(p) => peer_response(p),
        Response::Error(e) => format!("error: {e}"),
    }
}

/// A storage operation.
pub(crate) fn storage_op(op: &StorageOp) -> String {
    match op {
        StorageOp::Read { partition, key } => format!("read p{} {}", partition.0, text(key)),
        StorageOp::ReadHint {
            target,
            partition,
            key,
            ..
        } => format!("read_hint {target} p{} {}", partition.0, text(key)),
        StorageOp::Coordinate {
            partition,
            key,
            context,
            value,
            ..
        } => format!(
            "coordinate p{} {} {value:?} ctx={}",
            partition.0,
            text(key),
            show_context(context)
        ),
        StorageOp::Merge {
            partition,
            key,
            object: o,
            ..
        } => format!("merge p{} {} {}", partition.0, text(key), object(o)),
        StorageOp::StoreHint {
            target,
            partition,
            key,
            object: o,
            ..
        } => format!(
            "store_hint {target} p{} {} {}",
            partition.0,
            text(key),
            object(o)
        ),
        StorageOp::ListHints { target, limit, .. } => format!("list_hints {target} limit={limit}"),
        StorageOp::DeleteHint {
            target,
            partition,
            key,
            ..
        } => format!("delete_hint {target} p{} {}", partition.0, text(key)),
        StorageOp::DropHint {
            target,
            partition,
            key,
            ..
        } => format!("drop_hint {target} p{} {}", partition.0, text(key)),
        StorageOp::TreeNodes {
            partition, level, ..
        } => format!("tree_nodes p{} level {level}", partition.0),
        StorageOp::Segments {
            partition,
            segments,
            ..
        } => format!("segments p{} ({})", partition.0, segments.len()),
        StorageOp::ReadMany {
            partition, keys: k, ..
        } => {
            format!("read_many p{} [{}]", partition.0, keys(k))
        }
        StorageOp::MergeMany {
            partition, objects, ..
        } => {
            let names: Vec<Vec<u8>> = objects.iter().map(|(k, _)| k.clone()).collect();
            format!("merge_many p{} [{}]", partition.0, keys(&names))
        }
        StorageOp::Digests { partition, keys: k } => {
            format!("digests p{} [{}]", partition.0, keys(k))
        }
        StorageOp::ReapCandidates { partition, .. } => {
            format!("reap_candidates p{}", partition.0)
        }
        StorageOp::Reap { partition, keys: k } => {
            let names: Vec<Vec<u8>> = k.iter().map(|(key, _)| key.clone()).collect();
            format!("reap p{} [{}]", partition.0, keys(&names))
        }
        // The hint summary and whatever the protocol adds: the name says enough.
        other => other.op_name().to_owned(),
    }
}

/// A storage reply.
pub(crate) fn storage_reply(reply: &StorageResult) -> String {
    match reply {
        Err(e) => format!("error: {e}"),
        Ok(StorageReply::Object(o)) => format!("object {}", opt_object(o)),
        Ok(StorageReply::Coordinated { object: o, context }) => {
            format!("coordinated {} ctx={}", object(o), show_context(context))
        }
        Ok(StorageReply::Merged { object: o, changed }) => {
            format!("merged changed={changed} {}", object(o))
        }
        Ok(StorageReply::TooLarge { len, max }) => format!("too large {len}>{max}"),
        Ok(StorageReply::HintStored) => "hint stored".into(),
        Ok(StorageReply::HintRejected(why)) => format!("hint rejected {why:?}"),
        Ok(StorageReply::Hints(h)) => format!("{} hints", h.len()),
        Ok(StorageReply::HintSummary(s)) => {
            let parts: Vec<String> = s.iter().map(|(n, t)| format!("{n}:{}", t.count)).collect();
            format!("hint summary [{}]", parts.join(" "))
        }
        // Hint deletions and the replies of storage ops the protocol adds.
        Ok(other) => short_debug(other),
    }
}
