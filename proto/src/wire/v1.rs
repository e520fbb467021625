//! Wire version 1, frozen: the message types of the previous release that differ from the
//! current ones, and their conversions. Only responses differ (version 2 added
//! [`GetReply::written_at`](super::GetReply::written_at)); requests encode the same in both
//! versions. Every type here mirrors its current counterpart variant for variant, in the
//! same order, so that postcard writes and reads the bytes a version-1 node does (the
//! checked-in fixtures in `proto/tests/fixtures/v1` hold this to the previous release).
//!
//! Never edit these types: a new field or variant goes into the current types and, if a
//! version-1 peer cannot read it, is dropped or replaced in the conversion below. The
//! types shared with version 1 (requests, [`RequestError`], the status reports) must
//! only grow by appended enum variants, which a version-1 peer cannot decode: a new
//! [`RequestError`] variant gets a version-1 stand-in in [`v1_error`] (its exhaustive
//! match does not compile until it does), and a new response variant one in the
//! conversions below (likewise exhaustive). A new field in a shared struct changes the
//! bytes of an existing message: the fixture test fails, and it needs frozen types here.

use serde::{Deserialize, Serialize};

use crate::causality::CausalContext;
use crate::error::RequestError;
use crate::membership::GossipDigest;
use crate::object::Object;

use super::v2::ClusterInfo;
use super::{AaeReport, AaeResponse, StatusReport, WriteReply};

/// Version 1 of [`super::GetReply`]: no write times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct GetReply {
    found: bool,
    #[serde(with = "super::byte_strings")]
    values: Vec<Vec<u8>>,
    context: CausalContext,
}

/// Version 1 of [`super::ClientResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum ClientResponse {
    Get(GetReply),
    Put(WriteReply),
    Delete(WriteReply),
    ClusterInfo(ClusterInfo),
    Status(StatusReport),
    AaeStatus(AaeReport),
    Error(RequestError),
}

/// Version 1 of [`super::PeerResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum PeerResponse {
    Client(ClientResponse),
    Ack,
    Object(Option<Object>),
    Gossip(GossipDigest),
    Pong,
    Aae(AaeResponse),
    Error(RequestError),
}

/// Version 1 of [`super::Response`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Response {
    Client(ClientResponse),
    Peer(PeerResponse),
    Error(RequestError),
}

/// `e` as a version-1 peer can decode it: every variant that existed in version 1 as is.
/// A variant added later must map to one of these (`Internal` with its message, or a
/// closer one); no wildcard, so adding a variant without deciding does not compile.
fn v1_error(e: RequestError) -> RequestError {
    use RequestError as E;
    match e {
        e @ (E::EmptyKey
        | E::KeyTooLarge { .. }
        | E::ValueTooLarge { .. }
        | E::ObjectTooLarge { .. }
        | E::InvalidOptions(_)
        | E::InvalidContext(_)
        | E::Unavailable { .. }
        | E::Timeout { .. }
        | E::Overloaded
        | E::NotAllowed(_)
        | E::UnknownNode(_)
        | E::Storage(_)
        | E::Malformed(_)
        | E::UnsupportedVersion { .. }
        | E::ShuttingDown
        | E::Internal(_)
        | E::TooManySiblings { .. }
        | E::Incomplete { .. }
        | E::WrongPartition { .. }
        | E::ResponseTooLarge { .. }
        | E::DiskFull) => e,
        E::Backup(b) => E::Internal(format!("backup refused: {b}")),
        e @ (E::LayoutRefused(_)
        | E::StaleLayout { .. }
        | E::ClusterMismatch(_)
        | E::PlanChanged { .. }) => E::Internal(e.to_string()),
        // Replaced before encoding (`encode_response_as`).
        E::Declined(_) => E::ShuttingDown,
    }
}

/// `resp` as a version-2 peer can decode it: what version 3 added (cluster
/// administration replies, the layout's errors) becomes `Internal` with its text.
pub(super) fn before_layouts(resp: super::Response) -> super::Response {
    use super::{ClientResponse as C, PeerResponse as P, Response as R};
    fn error(e: RequestError) -> RequestError {
        match e {
            e @ (RequestError::LayoutRefused(_)
            | RequestError::StaleLayout { .. }
            | RequestError::ClusterMismatch(_)
            | RequestError::PlanChanged { .. }) => RequestError::Internal(e.to_string()),
            e => e,
        }
    }
    fn client(c: C) -> C {
        match c {
            C::Cluster(_) => C::Error(RequestError::Internal(
                "a cluster administration reply needs wire version 3".into(),
            )),
            C::Error(e) => C::Error(error(e)),
            c => c,
        }
    }
    match resp {
        R::Client(c) => R::Client(client(c)),
        R::Peer(P::Client(c)) => R::Peer(P::Client(client(c))),
        R::Peer(P::Error(e)) => R::Peer(P::Error(error(e))),
        R::Peer(P::Layout(_) | P::Paxos(_)) => R::Peer(P::Error(RequestError::Internal(
            "a layout reply needs wire version 3".into(),
        ))),
        R::Error(e) => R::Error(error(e)),
        R::Stamped { response, .. } => R::Client(client(response)),
        r => r,
    }
}

impl From<GetReply> for super::GetReply {
    fn from(r: GetReply) -> super::GetReply {
        super::GetReply {
            found: r.found,
            values: r.values,
            context: r.context,
            // Version 1 does not carry them: unknown.
            written_at: Vec::new(),
        }
    }
}

impl From<super::GetReply> for GetReply {
    fn from(r: super::GetReply) -> GetReply {
        GetReply {
            found: r.found,
            values: r.values,
            context: r.context,
        }
    }
}

impl From<ClientResponse> for super::ClientResponse {
    fn from(r: ClientResponse) -> super::ClientResponse {
        use super::ClientResponse as C;
        match r {
            ClientResponse::Get(g) => C::Get(g.into()),
            ClientResponse::Put(w) => C::Put(w),
            ClientResponse::Delete(w) => C::Delete(w),
            ClientResponse::ClusterInfo(i) => C::ClusterInfo(i.into()),
            ClientResponse::Status(s) => C::Status(s),
            ClientResponse::AaeStatus(a) => C::AaeStatus(a),
            ClientResponse::Error(e) => C::Error(e),
        }
    }
}

impl From<super::ClientResponse> for ClientResponse {
    fn from(r: super::ClientResponse) -> ClientResponse {
        use super::ClientResponse as C;
        match r {
            C::Get(g) => ClientResponse::Get(g.into()),
            C::Put(w) => ClientResponse::Put(w),
            C::Delete(w) => ClientResponse::Delete(w),
            C::ClusterInfo(i) => ClientResponse::ClusterInfo(i.into()),
            C::Status(s) => ClientResponse::Status(s),
            C::AaeStatus(a) => ClientResponse::AaeStatus(a),
            C::Error(e) => ClientResponse::Error(v1_error(e)),
            // Backups came with version 2: a version-1 frame asking for one is answered
            // with an error it can decode (the backup itself was made).
            C::Backup(b) => ClientResponse::Error(RequestError::Internal(format!(
                "backup made at {}; its reply needs wire version 2",
                b.path
            ))),
            // Cluster administration came with version 3 (issue 9).
            C::Cluster(_) => ClientResponse::Error(RequestError::Internal(
                "a cluster administration reply needs a newer wire version".into(),
            )),
            // Replaced before encoding (`encode_response_as`); never asked for.
            C::Batch(_) | C::Replica(_) => ClientResponse::Error(RequestError::Internal(
                "this answer needs wire version 6".into(),
            )),
        }
    }
}

impl From<PeerResponse> for super::PeerResponse {
    fn from(r: PeerResponse) -> super::PeerResponse {
        use super::PeerResponse as P;
        match r {
            PeerResponse::Client(c) => P::Client(c.into()),
            PeerResponse::Ack => P::Ack,
            PeerResponse::Object(o) => P::Object(o),
            PeerResponse::Gossip(g) => P::Gossip(g),
            PeerResponse::Pong => P::Pong,
            PeerResponse::Aae(a) => P::Aae(a),
            PeerResponse::Error(e) => P::Error(e),
        }
    }
}

impl From<super::PeerResponse> for PeerResponse {
    fn from(r: super::PeerResponse) -> PeerResponse {
        use super::PeerResponse as P;
        match r {
            P::Client(c) => PeerResponse::Client(c.into()),
            P::Ack => PeerResponse::Ack,
            P::Object(o) => PeerResponse::Object(o),
            P::Gossip(g) => PeerResponse::Gossip(g),
            P::Pong => PeerResponse::Pong,
            P::Aae(a) => PeerResponse::Aae(a),
            P::Error(e) => PeerResponse::Error(v1_error(e)),
            // Layout messages came with version 3; a version-1 peer never asks for them.
            P::Layout(_) | P::Paxos(_) => PeerResponse::Error(RequestError::Internal(
                "a layout reply needs wire version 3".into(),
            )),
            // Batches came with version 5 and are sent only to peers that speak it.
            P::Batch(_) => PeerResponse::Error(RequestError::Internal(
                "a batch answer needs wire version 5".into(),
            )),
        }
    }
}

impl From<Response> for super::Response {
    fn from(r: Response) -> super::Response {
        match r {
            Response::Client(c) => super::Response::Client(c.into()),
            Response::Peer(p) => super::Response::Peer(p.into()),
            Response::Error(e) => super::Response::Error(e),
        }
    }
}

impl From<super::Response> for Response {
    fn from(r: super::Response) -> Response {
        match r {
            super::Response::Client(c) => Response::Client(c.into()),
            super::Response::Peer(p) => Response::Peer(p.into()),
            super::Response::Error(e) => Response::Error(v1_error(e)),
            super::Response::Stamped { response, .. } => Response::Client(response.into()),
        }
    }
}
