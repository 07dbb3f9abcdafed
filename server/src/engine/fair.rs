//! Tenant-weighted fair ordering of the waiting queue: the pure part.
//!
//! Each tenant waits in its own FIFO. The next request to start is the head of the tenant with
//! the fewest running sequences per unit of weight (ties: the oldest head), so a tenant that
//! sends a burst fills the free slots only while no one else waits. Preempted sequences go back
//! to the front of their tenant's queue, older than anything that arrived.
//!
//! [`rebalance`] says when a running sequence should give its slot to another tenant: when a
//! waiting tenant is below its weighted share of the slots and a running one would still hold
//! at least its share without that sequence.

use std::collections::VecDeque;
use std::sync::Arc;

/// The tenant a request belongs to, and its weight against other tenants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantTag {
    pub name: Arc<str>,
    pub weight: u32,
}

impl Default for TenantTag {
    fn default() -> Self {
        TenantTag {
            name: "default".into(),
            weight: 1,
        }
    }
}

struct Lane<T> {
    tag: TenantTag,
    /// Arrival order (smaller: older) and item.
    items: VecDeque<(i64, T)>,
}

/// Waiting items, one FIFO per tenant.
pub struct FairQueue<T> {
    lanes: Vec<Lane<T>>,
    /// Order of the next item pushed at the back (increasing) and at the front (decreasing).
    next_back: i64,
    next_front: i64,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            lanes: Vec::new(),
            next_back: 0,
            next_front: -1,
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn lane(&mut self, tag: &TenantTag) -> &mut Lane<T> {
        let i = match self.lanes.iter().position(|l| l.tag.name == tag.name) {
            Some(i) => i,
            None => {
                self.lanes.push(Lane {
                    tag: tag.clone(),
                    items: VecDeque::new(),
                });
                self.lanes.len() - 1
            }
        };
        let lane = &mut self.lanes[i];
        lane.tag.weight = tag.weight; // the newest request's weight is the tenant's now
        lane
    }

    /// A new arrival, behind everything waiting.
    pub fn push_back(&mut self, tag: &TenantTag, item: T) {
        let order = self.next_back;
        self.next_back += 1;
        self.lane(tag).items.push_back((order, item));
        self.len += 1;
    }

    /// A preempted (or not yet fitting) item, ahead of everything waiting.
    pub fn push_front(&mut self, tag: &TenantTag, item: T) {
        let order = self.next_front;
        self.next_front -= 1;
        self.lane(tag).items.push_front((order, item));
        self.len += 1;
    }

    /// The tenant whose head goes next, given how many sequences each tenant runs.
    fn next_lane(&self, running: &impl Fn(&str) -> usize) -> Option<usize> {
        self.lanes
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.items.front().map(|(order, _)| (i, l, *order)))
            .min_by(|(_, a, ao), (_, b, bo)| {
                // running/weight compared without division: ra * wb vs rb * wa.
                let ka = running(&a.tag.name) as u64 * b.tag.weight as u64;
                let kb = running(&b.tag.name) as u64 * a.tag.weight as u64;
                ka.cmp(&kb).then(ao.cmp(bo))
            })
            .map(|(i, _, _)| i)
    }

    /// The tenant of the item [`pop`](Self::pop) would return.
    pub fn peek_tag(&self, running: impl Fn(&str) -> usize) -> Option<&TenantTag> {
        self.next_lane(&running).map(|i| &self.lanes[i].tag)
    }

    /// The next item to start: the head of the tenant with the fewest running sequences per
    /// weight, the oldest head among equals.
    pub fn pop(&mut self, running: impl Fn(&str) -> usize) -> Option<(TenantTag, T)> {
        let i = self.next_lane(&running)?;
        let lane = &mut self.lanes[i];
        let (_, item) = lane.items.pop_front()?;
        let tag = lane.tag.clone();
        if lane.items.is_empty() {
            self.lanes.swap_remove(i);
        }
        self.len -= 1;
        Some((tag, item))
    }

    /// Keeps the items for which `keep` is true, in order; the others go to `dropped`.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool, mut dropped: impl FnMut(T)) {
        for lane in &mut self.lanes {
            for (order, item) in std::mem::take(&mut lane.items) {
                if keep(&item) {
                    lane.items.push_back((order, item));
                } else {
                    dropped(item);
                }
            }
        }
        self.lanes.retain(|l| !l.items.is_empty());
        self.len = self.lanes.iter().map(|l| l.items.len()).sum();
    }

    /// The tenants waiting, with their weights.
    pub fn tags(&self) -> impl Iterator<Item = &TenantTag> {
        self.lanes.iter().map(|l| &l.tag)
    }
}

/// Which running tenant should give a slot to `waiting` (the tenant [`FairQueue::pop`] would
/// start next), when every slot is taken. `running` lists each running sequence's tenant;
/// `others` are the other tenants with waiting requests. A tenant's share of the `slots` is in
/// proportion to its weight among the tenants running or waiting. The victim is the tenant
/// furthest above its share, and only when it keeps at least its share without the slot while
/// `waiting` stays within its own with it.
pub fn rebalance<'a>(
    slots: usize,
    running: &'a [&'a TenantTag],
    waiting: &TenantTag,
    others: &[&TenantTag],
) -> Option<&'a TenantTag> {
    let mut active: Vec<&TenantTag> = Vec::new();
    for t in running
        .iter()
        .copied()
        .chain([waiting])
        .chain(others.iter().copied())
    {
        if !active.iter().any(|a| a.name == t.name) {
            active.push(t);
        }
    }
    let total: u64 = active.iter().map(|t| t.weight as u64).sum();
    let count = |t: &TenantTag| running.iter().filter(|r| r.name == t.name).count() as u64;
    // In units of 1/total slot: share(t) = slots * weight(t) / total.
    let share = |t: &TenantTag| slots as u64 * t.weight as u64;
    if (count(waiting) + 1) * total > share(waiting) {
        return None;
    }
    active
        .iter()
        .filter(|t| t.name != waiting.name)
        .filter(|t| count(t) >= 1 && (count(t) - 1) * total >= share(t))
        .max_by(|a, b| {
            // Furthest above share: count/weight, compared without division.
            (count(a) * b.weight as u64).cmp(&(count(b) * a.weight as u64))
        })
        .and_then(|t| running.iter().copied().find(|r| r.name == t.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tag(name: &str, weight: u32) -> TenantTag {
        TenantTag {
            name: name.into(),
            weight,
        }
    }

    #[test]
    fn one_tenant_is_plain_fifo_with_preempted_in_front() {
        let a = tag("a", 1);
        let mut q = FairQueue::default();
        for i in 0..3 {
            q.push_back(&a, i);
        }
        q.push_front(&a, 9);
        let order: Vec<i32> = std::iter::from_fn(|| q.pop(|_| 0).map(|(_, x)| x)).collect();
        assert_eq!(order, [9, 0, 1, 2]);
        assert!(q.is_empty());
    }

    #[test]
    fn the_tenant_with_fewer_running_per_weight_goes_first() {
        let (a, b) = (tag("a", 1), tag("b", 2));
        let mut q = FairQueue::default();
        q.push_back(&a, "a1");
        q.push_back(&b, "b1");
        // a runs 1, b runs 1 with weight 2: b is further below its share.
        let running = |t: &str| if t == "a" || t == "b" { 1 } else { 0 };
        assert_eq!(q.peek_tag(running).unwrap().name.as_ref(), "b");
        assert_eq!(q.pop(running).unwrap().1, "b1");
        // b runs 3 (3/2 > 1/1): a goes next.
        q.push_back(&b, "b2");
        let running = |t: &str| if t == "a" { 1 } else { 3 };
        assert_eq!(q.pop(running).unwrap().1, "a1");
        // Equal: the oldest head.
        q.push_back(&a, "a2");
        assert_eq!(q.pop(|_| 0).unwrap().1, "b2");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn retain_keeps_order_and_hands_out_the_rest() {
        let (a, b) = (tag("a", 1), tag("b", 1));
        let mut q = FairQueue::default();
        for i in 0..6 {
            q.push_back(if i % 2 == 0 { &a } else { &b }, i);
        }
        let mut gone = Vec::new();
        q.retain(|x| *x != 1 && *x != 4, |x| gone.push(x));
        assert_eq!(gone, [4, 1]);
        assert_eq!(q.len(), 4);
        let order: Vec<i32> = std::iter::from_fn(|| q.pop(|_| 0).map(|(_, x)| x)).collect();
        assert_eq!(order, [0, 2, 3, 5]);
    }

    #[test]
    fn a_burst_gives_up_slots_down_to_its_share() {
        let (a, b) = (tag("a", 1), tag("b", 1));
        let mut running: Vec<&TenantTag> = vec![&a; 16];
        // b waits: a gives slots until both hold 8.
        let mut moved = 0;
        while let Some(victim) = rebalance(16, &running, &b, &[]) {
            assert_eq!(victim.name.as_ref(), "a");
            let i = running.iter().rposition(|t| t.name == victim.name).unwrap();
            running.remove(i);
            running.push(&b);
            moved += 1;
        }
        assert_eq!(moved, 8);
        // One slot: nobody is preempted for a tenant that would be over its half.
        assert!(rebalance(1, &[&a], &b, &[]).is_none());
        // Weights: c (3) against a (1) over 8 slots gets 6.
        let c = tag("c", 3);
        let mut running: Vec<&TenantTag> = vec![&a; 8];
        let mut moved = 0;
        while let Some(v) = rebalance(8, &running, &c, &[]) {
            let i = running.iter().rposition(|t| t.name == v.name).unwrap();
            running.remove(i);
            running.push(&c);
            moved += 1;
        }
        assert_eq!(moved, 6);
    }

    proptest! {
        /// Rebalancing always ends, and never takes a victim below its share or lifts the
        /// waiting tenant above its own.
        #[test]
        fn rebalancing_ends_within_shares(
            slots in 1usize..24,
            weights in proptest::collection::vec(1u32..5, 2..5),
            fill in proptest::collection::vec(0usize..5, 24),
        ) {
            let tags: Vec<TenantTag> = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| tag(&format!("t{i}"), w))
                .collect();
            let waiting = &tags[0];
            let mut running: Vec<&TenantTag> = (0..slots)
                .map(|i| &tags[1 + fill[i] % (tags.len() - 1)])
                .collect();
            let total: u64 = {
                let mut seen: Vec<&str> = running.iter().map(|t| t.name.as_ref()).collect();
                seen.push(&waiting.name);
                seen.sort();
                seen.dedup();
                tags.iter().filter(|t| seen.contains(&t.name.as_ref())).map(|t| t.weight as u64).sum()
            };
            let mut steps = 0;
            while let Some(v) = rebalance(slots, &running, waiting, &[]) {
                let v = v.clone();
                let count = |n: &str, r: &[&TenantTag]| r.iter().filter(|t| t.name.as_ref() == n).count() as u64;
                prop_assert!((count(&v.name, &running) - 1) * total >= slots as u64 * v.weight as u64);
                let i = running.iter().rposition(|t| t.name == v.name).unwrap();
                running.remove(i);
                running.push(waiting);
                prop_assert!(count(&waiting.name, &running) * total <= slots as u64 * waiting.weight as u64);
                steps += 1;
                prop_assert!(steps <= slots);
            }
        }
    }
}
