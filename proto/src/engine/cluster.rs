//! Cluster administration (`shoal cluster ...`): the layout's status as this node sees
//! it. Staging, planning and committing changes are added with the layout's agreement
//! (issue 9).

use crate::wire::{
    ClientResponse, ClusterReply, ClusterRequest, ClusterStatus, MemberReport, MemberRole,
    TransferSummary,
};
use crate::RequestError;

use super::{Engine, InboundId};

impl Engine {
    pub(super) fn handle_cluster(&mut self, id: InboundId, req: ClusterRequest) {
        let reply = match req {
            ClusterRequest::Status => Ok(ClusterReply::Status(self.cluster_status())),
            ClusterRequest::Stage(_)
            | ClusterRequest::Unstage
            | ClusterRequest::Plan
            | ClusterRequest::Commit { .. } => Err(RequestError::LayoutRefused(
                "this node does not take layout changes yet".into(),
            )),
        };
        let response = match reply {
            Ok(r) => ClientResponse::Cluster(r),
            Err(e) => ClientResponse::Error(e),
        };
        self.respond_client(id, response);
    }

    /// The layout, its members and the transfers, as this node knows them.
    pub(super) fn cluster_status(&self) -> ClusterStatus {
        let current = self.layout.current();
        let members = current
            .members()
            .iter()
            .map(|m| MemberReport {
                id: m.id.clone(),
                addr: m.addr,
                role: MemberRole::Member(m.state),
                zone: m.zone.clone(),
                weight: m.weight,
                partitions: current.ring().owned_count(&m.id),
                up: m.id == self.me || self.membership.is_up(&m.id),
            })
            .collect();
        ClusterStatus {
            node: self.me.clone(),
            version: current.version(),
            settings: current.settings().clone(),
            versions_in_use: self.layout.versions().iter().map(|l| l.version()).collect(),
            members,
            transfers: TransferSummary::default(),
            staged: Vec::new(),
        }
    }
}
