//! Wire version 2, frozen: the response types of the previous release that differ from the
//! current ones, and their conversions. Version 3 added [`super::ClusterInfo::layout_version`]
//! (a client refreshes its routing when a node shows a newer layout), which changes the
//! bytes of a `ClusterInfo` answer; every other version-2 response encodes as today
//! (after [`super::v1::before_layouts`] replaced what version 3 added). Version 1 shares
//! this module's [`ClusterInfo`].
//!
//! Never edit these types: see the rules at the top of `v1.rs`.

use serde::{Deserialize, Serialize};
use shoal_ring::Ring;

use crate::error::RequestError;
use crate::membership::GossipDigest;
use crate::object::Object;

use super::{
    AaeReport, AaeResponse, BackupReply, GetReply, MemberAddress, StatusReport, WriteReply,
};

/// Versions 1 and 2 of [`super::ClusterInfo`]: no layout version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ClusterInfo {
    ring: Ring,
    members: Vec<MemberAddress>,
    n: u8,
    r: u8,
    w: u8,
}

/// Version 2 of [`super::ClientResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum ClientResponse {
    Get(GetReply),
    Put(WriteReply),
    Delete(WriteReply),
    ClusterInfo(ClusterInfo),
    Status(StatusReport),
    AaeStatus(AaeReport),
    Error(RequestError),
    Backup(BackupReply),
}

/// Version 2 of [`super::PeerResponse`].
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

/// Version 2 of [`super::Response`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Response {
    Client(ClientResponse),
    Peer(PeerResponse),
    Error(RequestError),
}

impl From<ClusterInfo> for super::ClusterInfo {
    fn from(i: ClusterInfo) -> super::ClusterInfo {
        super::ClusterInfo {
            ring: i.ring,
            members: i.members,
            n: i.n,
            r: i.r,
            w: i.w,
            // Not carried before version 3: unknown.
            layout_version: 0,
        }
    }
}

impl From<super::ClusterInfo> for ClusterInfo {
    fn from(i: super::ClusterInfo) -> ClusterInfo {
        ClusterInfo {
            ring: i.ring,
            members: i.members,
            n: i.n,
            r: i.r,
            w: i.w,
        }
    }
}

impl From<ClientResponse> for super::ClientResponse {
    fn from(r: ClientResponse) -> super::ClientResponse {
        use super::ClientResponse as C;
        match r {
            ClientResponse::Get(g) => C::Get(g),
            ClientResponse::Put(w) => C::Put(w),
            ClientResponse::Delete(w) => C::Delete(w),
            ClientResponse::ClusterInfo(i) => C::ClusterInfo(i.into()),
            ClientResponse::Status(s) => C::Status(s),
            ClientResponse::AaeStatus(a) => C::AaeStatus(a),
            ClientResponse::Error(e) => C::Error(e),
            ClientResponse::Backup(b) => C::Backup(b),
        }
    }
}

/// What version 3 added is expected to be replaced already ([`super::v1::before_layouts`]);
/// a cluster reply left over still becomes an error a version-2 peer decodes.
impl From<super::ClientResponse> for ClientResponse {
    fn from(r: super::ClientResponse) -> ClientResponse {
        use super::ClientResponse as C;
        match r {
            C::Get(g) => ClientResponse::Get(g),
            C::Put(w) => ClientResponse::Put(w),
            C::Delete(w) => ClientResponse::Delete(w),
            C::ClusterInfo(i) => ClientResponse::ClusterInfo(i.into()),
            C::Status(s) => ClientResponse::Status(s),
            C::AaeStatus(a) => ClientResponse::AaeStatus(a),
            C::Error(e) => ClientResponse::Error(e),
            C::Backup(b) => ClientResponse::Backup(b),
            C::Cluster(_) => ClientResponse::Error(RequestError::Internal(
                "a cluster administration reply needs wire version 3".into(),
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
            P::Error(e) => PeerResponse::Error(e),
            // Layout messages came with version 3; a version-2 peer never asks for them.
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
            super::Response::Error(e) => Response::Error(e),
            super::Response::Stamped { response, .. } => Response::Client(response.into()),
        }
    }
}
