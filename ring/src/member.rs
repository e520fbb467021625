//! Ring members.

use serde::{Deserialize, Serialize};

use crate::error::{excerpt, RingError};
use crate::node_id::{check_name, NodeId};

/// The capacity weight of a member that declares none.
pub const DEFAULT_WEIGHT: u32 = 1;

/// A node taking part in the ring, with what the claim needs to know about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's identity.
    pub id: NodeId,
    /// The failure domain (rack, availability zone) the node lives in. Preference lists spread
    /// over distinct zones. A member without a zone is a failure domain of its own.
    /// Same naming rule as node ids.
    #[serde(default)]
    pub zone: Option<String>,
    /// Capacity weight, at least 1: a member owns a share of the partitions proportional to
    /// its weight.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl Member {
    /// A member with no zone and the default weight.
    pub fn new(id: NodeId) -> Member {
        Member {
            id,
            zone: None,
            weight: DEFAULT_WEIGHT,
        }
    }

    /// This member placed in `zone`.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Member {
        self.zone = Some(zone.into());
        self
    }

    /// This member with capacity weight `weight`.
    pub fn with_weight(mut self, weight: u32) -> Member {
        self.weight = weight;
        self
    }

    /// Checks the weight and the zone name.
    pub(crate) fn validate(&self) -> Result<(), RingError> {
        if self.weight == 0 {
            return Err(RingError::ZeroWeight {
                member: self.id.clone(),
            });
        }
        if let Some(zone) = &self.zone {
            check_name(zone).map_err(|reason| RingError::InvalidZone {
                member: self.id.clone(),
                zone: excerpt(zone),
                reason,
            })?;
        }
        Ok(())
    }
}

/// Validates a member list and sorts it by id.
pub(crate) fn validate_members(mut members: Vec<Member>) -> Result<Vec<Member>, RingError> {
    if members.is_empty() {
        return Err(RingError::NoMembers);
    }
    for member in &members {
        member.validate()?;
    }
    members.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(pair) = members.windows(2).find(|pair| pair[0].id == pair[1].id) {
        return Err(RingError::DuplicateMember {
            id: pair[0].id.clone(),
        });
    }
    Ok(members)
}

/// Zone numbers per member: members sharing a zone name share a number, and a member without a
/// zone gets a number of its own. Returns the numbers (indexed like `members`) and how many
/// zones there are.
pub(crate) fn zone_numbers(members: &[Member]) -> (Vec<u32>, usize) {
    let mut named = std::collections::BTreeMap::<&str, u32>::new();
    let mut next = 0u32;
    let zone_of = members
        .iter()
        .map(|member| match &member.zone {
            Some(zone) => *named.entry(zone.as_str()).or_insert_with(|| {
                next += 1;
                next - 1
            }),
            None => {
                next += 1;
                next - 1
            }
        })
        .collect();
    (zone_of, next as usize)
}
