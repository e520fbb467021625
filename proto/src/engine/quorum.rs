//! The quorum arithmetic that reads and writes share: which node answers for which
//! primary, who has answered, and whether R/W (and PR/PW from primaries) is met, still
//! possible, or out of reach.
//!
//! A coordinator places one slot for itself (slot [`LOCAL`], counted as a primary, since
//! its own store answers like any replica's) and one per other primary: the primary when
//! it is up, else the next fallback standing in for it (the slot is "hinted" for that
//! primary). A slot is pending until it is answered or fails; a failed slot is replaced by
//! the next healthy fallback, hinted for the same primary, so that a sloppy quorum can
//! still be reached. The type is pure bookkeeping: the engine sends the requests and
//! feeds the outcomes back.
//!
//! A read does not ask every slot at once: its slots start idle (placed, not asked;
//! [`Quorum::idle_remote`]) and it asks them as it needs them ([`Quorum::ask_next`],
//! primaries first). An idle slot counts as possible, like a pending one, so asking
//! fewer never makes a quorum look out of reach.
//!
//! While a layout change is in progress a write has several replica sets (one per layout
//! version in use, see `crate::layout::LayoutHistory::write_sets`) and must meet W (and
//! PW) in EACH of them ([`Quorum::place_in_sets`]): a slot counts for a set when the
//! primary it answers for (itself, or the one it stands in for) is in the set. So a write
//! acknowledged during a move is on W of the old replicas and on W of the new ones, and
//! neither finishing nor aborting the move can lose it.

use std::collections::VecDeque;

use shoal_ring::NodeId;

use crate::error::RequestError;

/// The slot of the coordinator's own store.
pub(super) const LOCAL: usize = 0;

/// How many answers an operation needs: in all (R or W), and how many of them must come
/// from primaries (PR or PW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Needed {
    /// R or W.
    pub(super) all: usize,
    /// PR or PW.
    pub(super) primaries: usize,
}

/// Fewer answers can come than are needed. When both counts fall short, the total is
/// the one reported, so that the client sees R/W before PR/PW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Shortfall {
    /// R/W, or PR/PW when only the primaries fall short.
    pub(super) needed: usize,
    /// How many answers (of that kind) can still be had at most.
    pub(super) alive: usize,
}

impl From<Shortfall> for RequestError {
    fn from(s: Shortfall) -> Self {
        RequestError::Unavailable {
            needed: s.needed,
            alive: s.alive,
        }
    }
}

/// Where an operation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    /// Enough answers, and enough of them from primaries.
    Met,
    /// Not yet met, but the pending slots and the unused fallbacks could still meet it.
    Waiting,
    /// Can no longer be met.
    Impossible(Shortfall),
}

/// A node to send the operation's request to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    /// The slot its answer is recorded in.
    pub(super) slot: usize,
    /// The node to ask.
    pub(super) node: NodeId,
    /// The primary this node stands in for, if it is a fallback.
    pub(super) hint_for: Option<NodeId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SlotState<R> {
    /// Placed but not asked yet (a read asks R replicas first, see `read.rs`): it counts
    /// as possible, and [`Quorum::ask_next`] asks it.
    Idle,
    Pending,
    Answered(R),
    Failed,
}

#[derive(Clone, Debug)]
struct Slot<R> {
    node: NodeId,
    hint_for: Option<NodeId>,
    state: SlotState<R>,
}

impl<R> Slot<R> {
    fn new(node: NodeId, hint_for: Option<NodeId>) -> Self {
        Slot {
            node,
            hint_for,
            state: SlotState::Pending,
        }
    }

    fn is_pending(&self) -> bool {
        matches!(self.state, SlotState::Pending)
    }

    fn is_idle(&self) -> bool {
        matches!(self.state, SlotState::Idle)
    }

    /// Answered, or asked and still waiting: what counts towards the quorum without
    /// asking anyone more.
    fn is_asked_and_live(&self) -> bool {
        matches!(self.state, SlotState::Pending | SlotState::Answered(_))
    }

    fn is_primary(&self) -> bool {
        self.hint_for.is_none()
    }

    /// The primary this slot answers for: its node, or the one it stands in for.
    fn answers_for(&self) -> &NodeId {
        self.hint_for.as_ref().unwrap_or(&self.node)
    }

    /// Whether the slot counts towards the quorum of replica set `set`.
    fn answers_in(&self, set: &[NodeId]) -> bool {
        set.contains(self.answers_for())
    }
}

/// One read's or write's slots and counts; `R` is what an answer carries (a read keeps
/// each replica's copy for read repair, a write nothing).
#[derive(Clone, Debug)]
pub(super) struct Quorum<R> {
    needed: Needed,
    slots: Vec<Slot<R>>,
    /// Fallbacks not used yet, in ring order; `None` when fallbacks may not stand in for
    /// primaries at all (writes without hinted handoff).
    spare: Option<VecDeque<NodeId>>,
    /// Primaries that no slot could be placed for, once each.
    unplaced: Vec<NodeId>,
    answers: usize,
    primary_answers: usize,
    /// The replica sets W (PW) must be met in, each; empty: one set, every slot counts.
    sets: Vec<Vec<NodeId>>,
}

impl<R> Quorum<R> {
    /// Places the slots: [`LOCAL`] for `me`, then one per other primary in `primaries`
    /// order, the next of `fallbacks` standing in for each primary that `is_up` says is
    /// down. With `fallbacks` `None` a down primary gets no slot and is not recorded as
    /// unplaced.
    ///
    /// # Errors
    /// A [`Shortfall`] when the placed slots alone (unused fallbacks do not count here)
    /// could not meet `needed`: the operation is refused before anything is done.
    pub(super) fn place(
        me: &NodeId,
        primaries: &[NodeId],
        needed: Needed,
        mut fallbacks: Option<VecDeque<NodeId>>,
        is_up: impl Fn(&NodeId) -> bool,
    ) -> Result<Self, Shortfall> {
        let mut slots = vec![Slot::new(me.clone(), None)];
        let mut unplaced = Vec::new();
        for p in primaries.iter().filter(|p| *p != me) {
            if is_up(p) {
                slots.push(Slot::new(p.clone(), None));
            } else if let Some(spare) = fallbacks.as_mut() {
                match spare.pop_front() {
                    Some(f) => slots.push(Slot::new(f, Some(p.clone()))),
                    None => unplaced.push(p.clone()),
                }
            }
        }
        let reachable = slots.len();
        let reachable_primaries = slots.iter().filter(|s| s.is_primary()).count();
        if let Some(short) = shortfall(needed, reachable, reachable_primaries) {
            return Err(short);
        }
        Ok(Quorum {
            needed,
            slots,
            spare: fallbacks,
            unplaced,
            answers: 0,
            primary_answers: 0,
            sets: Vec::new(),
        })
    }

    /// Places the slots for a write that must meet `needed` in each of `sets` (the
    /// replica sets of the layout versions in use): [`Quorum::place`] over the nodes of
    /// all sets, each once (the first set's order first).
    ///
    /// # Errors
    /// A [`Shortfall`] when some set could not be met by the placed slots alone.
    pub(super) fn place_in_sets(
        me: &NodeId,
        sets: &[Vec<NodeId>],
        needed: Needed,
        fallbacks: Option<VecDeque<NodeId>>,
        is_up: impl Fn(&NodeId) -> bool,
    ) -> Result<Self, Shortfall> {
        let mut union: Vec<NodeId> = Vec::new();
        for n in sets.iter().flatten() {
            if !union.contains(n) {
                union.push(n.clone());
            }
        }
        let mut q = Quorum::place(me, &union, needed, fallbacks, is_up)?;
        if sets.len() > 1 {
            q.sets = sets.to_vec();
            for set in sets {
                let reachable = q.slots.iter().filter(|s| s.answers_in(set)).count();
                let primaries = q
                    .slots
                    .iter()
                    .filter(|s| s.is_primary() && set.contains(&s.node))
                    .count();
                if let Some(short) = shortfall(needed, reachable, primaries) {
                    return Err(short);
                }
            }
        }
        Ok(q)
    }

    /// The slots other than [`LOCAL`], in slot order: the requests a write sends at the
    /// start (a read asks fewer, see [`Quorum::ask_next`]).
    pub(super) fn remote_targets(&self) -> Vec<Target> {
        self.slots
            .iter()
            .enumerate()
            .skip(LOCAL + 1)
            .map(|(slot, s)| Target {
                slot,
                node: s.node.clone(),
                hint_for: s.hint_for.clone(),
            })
            .collect()
    }

    /// Whether `slot` exists and still waits for its outcome; outcomes for any other slot
    /// are ignored.
    pub(super) fn is_pending(&self, slot: usize) -> bool {
        self.slots.get(slot).is_some_and(Slot::is_pending)
    }

    /// `slot` answered with `answer`.
    pub(super) fn record(&mut self, slot: usize, answer: R) {
        let Some(s) = self.slots.get_mut(slot).filter(|s| s.is_pending()) else {
            return;
        };
        self.answers += 1;
        if s.is_primary() {
            self.primary_answers += 1;
        }
        s.state = SlotState::Answered(answer);
    }

    /// `slot` failed: its primary gets the next fallback that `is_up` (down ones are
    /// dropped on the way), returned as the request to send. `None` when no fallback is
    /// left (the primary is then recorded as unplaced) or fallbacks may not stand in.
    pub(super) fn fail(&mut self, slot: usize, is_up: impl Fn(&NodeId) -> bool) -> Option<Target> {
        self.fail_into(slot, is_up, SlotState::Pending)
    }

    /// [`Quorum::fail`], the replacement fallback (if any) placed [idle](Quorum::ask_next)
    /// instead of asked: a read asks the replicas it has not asked yet before fallbacks.
    pub(super) fn fail_idle(&mut self, slot: usize, is_up: impl Fn(&NodeId) -> bool) {
        self.fail_into(slot, is_up, SlotState::Idle);
    }

    fn fail_into(
        &mut self,
        slot: usize,
        is_up: impl Fn(&NodeId) -> bool,
        replacement: SlotState<R>,
    ) -> Option<Target> {
        let s = self.slots.get_mut(slot).filter(|s| s.is_pending())?;
        s.state = SlotState::Failed;
        let primary = s.hint_for.clone().unwrap_or_else(|| s.node.clone());
        let spare = self.spare.as_mut()?;
        let Some(node) = std::iter::from_fn(|| spare.pop_front()).find(|f| is_up(f)) else {
            if !self.unplaced.contains(&primary) {
                self.unplaced.push(primary);
            }
            return None;
        };
        let mut placed = Slot::new(node.clone(), Some(primary.clone()));
        placed.state = replacement;
        self.slots.push(placed);
        Some(Target {
            slot: self.slots.len() - 1,
            node,
            hint_for: Some(primary),
        })
    }

    /// Whether a fallback that is up is left to stand in for a failed slot.
    pub(super) fn has_fallback(&self, is_up: impl Fn(&NodeId) -> bool) -> bool {
        self.spare.as_ref().is_some_and(|s| s.iter().any(is_up))
    }

    /// The primary `slot` stands for: its node, or the node a fallback holds a hint for.
    pub(super) fn primary_of(&self, slot: usize) -> Option<&NodeId> {
        self.slots
            .get(slot)
            .map(|s| s.hint_for.as_ref().unwrap_or(&s.node))
    }

    /// The request of a pending `slot`, to send again.
    pub(super) fn target_of(&self, slot: usize) -> Option<Target> {
        self.slots
            .get(slot)
            .filter(|s| s.is_pending())
            .map(|s| Target {
                slot,
                node: s.node.clone(),
                hint_for: s.hint_for.clone(),
            })
    }

    /// Keeps only the replica sets that are among `current` (the sets of the layout
    /// versions still in use): a version pruned since the write started needs no
    /// quorum any more. Nothing changes when no set would be left (a newer version came
    /// instead: the write keeps what it started with).
    pub(super) fn narrow_sets(&mut self, current: &[Vec<NodeId>]) {
        if self.sets.len() < 2 {
            return;
        }
        let kept: Vec<Vec<NodeId>> = self
            .sets
            .iter()
            .filter(|s| current.contains(s))
            .cloned()
            .collect();
        if !kept.is_empty() {
            self.sets = kept;
        }
    }

    /// `slot` failed for a reason any other node would share too (the object is too
    /// large): no fallback is tried and nothing is recorded as unplaced.
    pub(super) fn refuse(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot).filter(|s| s.is_pending()) {
            s.state = SlotState::Failed;
        }
    }

    /// Met, waiting, or impossible: what can still come is the answers so far, the
    /// pending slots and the unused fallbacks (each could replace a failed slot); from
    /// primaries, only the answers and the pending primary slots.
    pub(super) fn status(&self) -> Status {
        if self.sets.is_empty() {
            return self.status_of(|_| true);
        }
        let mut waiting = false;
        for set in &self.sets {
            match self.status_of(|s| s.answers_in(set)) {
                Status::Met => {}
                Status::Waiting => waiting = true,
                impossible @ Status::Impossible(_) => return impossible,
            }
        }
        if waiting {
            Status::Waiting
        } else {
            Status::Met
        }
    }

    /// [`Quorum::status`] counting only the slots `counts` takes.
    fn status_of(&self, counts: impl Fn(&Slot<R>) -> bool) -> Status {
        let counted = || self.slots.iter().filter(|s| counts(s));
        let answers = counted()
            .filter(|s| matches!(s.state, SlotState::Answered(_)))
            .count();
        let primary_answers = counted()
            .filter(|s| s.is_primary() && matches!(s.state, SlotState::Answered(_)))
            .count();
        if answers >= self.needed.all && primary_answers >= self.needed.primaries {
            return Status::Met;
        }
        let spare = self.spare.as_ref().map_or(0, VecDeque::len);
        let pending = counted().filter(|s| s.is_pending() || s.is_idle()).count();
        let possible = answers + pending + spare;
        let possible_primaries = primary_answers
            + counted()
                .filter(|s| (s.is_pending() || s.is_idle()) && s.is_primary())
                .count();
        match shortfall(self.needed, possible, possible_primaries) {
            Some(short) => Status::Impossible(short),
            None => Status::Waiting,
        }
    }

    /// How many slots still wait for their outcome (asked, not answered nor failed).
    pub(super) fn pending(&self) -> usize {
        self.slots.iter().filter(|s| s.is_pending()).count()
    }

    /// Makes every slot but [`LOCAL`] idle: placed, not asked. A read then asks them with
    /// [`Quorum::ask_next`] as it needs them.
    pub(super) fn idle_remote(&mut self) {
        for s in self.slots.iter_mut().skip(LOCAL + 1) {
            if s.is_pending() {
                s.state = SlotState::Idle;
            }
        }
    }

    /// How many placed slots were not asked yet.
    pub(super) fn idle(&self) -> usize {
        self.slots.iter().filter(|s| s.is_idle()).count()
    }

    /// Asks the idle slot a read prefers next, returned as the request to send: a primary
    /// before a fallback standing in for one (a primary holds the key's writes; a
    /// fallback only the hints it kept), each kind in slot order (the primaries' order in
    /// the replica set). `None` when no slot is idle.
    pub(super) fn ask_next(&mut self) -> Option<Target> {
        let slot = (0..self.slots.len())
            .filter(|&i| self.slots[i].is_idle())
            .min_by_key(|&i| (!self.slots[i].is_primary(), i))?;
        let s = &mut self.slots[slot];
        s.state = SlotState::Pending;
        Some(Target {
            slot,
            node: s.node.clone(),
            hint_for: s.hint_for.clone(),
        })
    }

    /// How many more slots must be asked so that the answers and the slots waiting could
    /// meet what is needed (R, and PR from primaries), without counting on anyone idle.
    /// Asking that many with [`Quorum::ask_next`] takes primaries first, so the primary
    /// count is met first when it can be.
    pub(super) fn asks_short(&self) -> usize {
        let live = self.slots.iter().filter(|s| s.is_asked_and_live());
        let all = live.clone().count();
        let primaries = live.filter(|s| s.is_primary()).count();
        let short_all = self.needed.all.saturating_sub(all);
        let short_primaries = self.needed.primaries.saturating_sub(primaries);
        short_all.max(short_primaries)
    }

    /// How many slots answered.
    pub(super) fn answers(&self) -> usize {
        self.answers
    }

    /// How many primary slots (the primaries themselves, not fallbacks) answered.
    pub(super) fn primary_answers(&self) -> usize {
        self.primary_answers
    }

    /// What the operation needs.
    pub(super) fn needed(&self) -> Needed {
        self.needed
    }

    /// Primaries that got no slot (at placement, or when their slot failed and no
    /// fallback was left), in the order that happened.
    pub(super) fn unplaced(&self) -> &[NodeId] {
        &self.unplaced
    }

    /// The answers so far, in slot order.
    pub(super) fn answered(&self) -> impl Iterator<Item = &R> {
        self.slots.iter().filter_map(|s| match &s.state {
            SlotState::Answered(answer) => Some(answer),
            _ => None,
        })
    }

    /// The answered slots in slot order: the node, the primary it stands in for, and its
    /// answer.
    pub(super) fn into_answers(self) -> impl Iterator<Item = (NodeId, Option<NodeId>, R)> {
        self.slots.into_iter().filter_map(|s| match s.state {
            SlotState::Answered(answer) => Some((s.node, s.hint_for, answer)),
            SlotState::Idle | SlotState::Pending | SlotState::Failed => None,
        })
    }
}

/// The first count that falls short of `needed`, the total before the primaries.
fn shortfall(needed: Needed, all: usize, primaries: usize) -> Option<Shortfall> {
    if all < needed.all {
        Some(Shortfall {
            needed: needed.all,
            alive: all,
        })
    } else if primaries < needed.primaries {
        Some(Shortfall {
            needed: needed.primaries,
            alive: primaries,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
