//! The paged KV cache's bookkeeping: which blocks of the store are free, which belong to
//! running sequences, and which hold a cached prefix (prefix caching).
//!
//! Every block of [`BLOCK`] positions a sequence fills is registered under the hash of its
//! token chain: `hash(parent block's hash, the block's tokens)`, so equal hashes mean equal
//! prompts from the first token on. A new request looks up its prompt's full blocks in order
//! and shares every consecutive hit (reference-counted; the model never writes into a shared
//! block, since a sequence only appends after its last full block). A lookup also compares the
//! block's stored parent hash and tokens, so a hash collision cannot hand one conversation's
//! cache to another. Released blocks that hold a registered prefix stay cached, unreferenced,
//! and are evicted least recently used first when a free block is needed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use crate::models::BLOCK;

/// The hash of a block's token chain.
pub(super) type ChainHash = u64;

/// The chain hash of a block holding `tokens` after the block hashed `parent` (`None`: the
/// first block), whose first `batched` rows were computed in a prompt batch's order and the
/// rest as decode steps (the two give different bits; see `models::BatchItem::batched`).
pub(super) fn chain_hash(parent: Option<ChainHash>, tokens: &[u32], batched: usize) -> ChainHash {
    // SipHash with fixed keys: the same tokens give the same hash in every process.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x7279_7a61_6e73_7465, 0x696e_5f6b_765f_7031);
    parent.hash(&mut h);
    tokens.hash(&mut h);
    batched.hash(&mut h);
    h.finish()
}

/// What a cached block was registered as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cached {
    hash: ChainHash,
    parent: Option<ChainHash>,
    tokens: Vec<u32>,
    batched: usize,
}

/// Prefix-cache lookups, in blocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Full prompt blocks looked up by requests ([`BlockPool::note_lookup`]).
    pub queried: u64,
    /// Of those, found in the cache.
    pub hits: u64,
    /// Cached blocks evicted to make room.
    pub evicted: u64,
}

/// The allocator of a store of `capacity` blocks.
pub(super) struct BlockPool {
    capacity: usize,
    /// Whether full blocks are registered for sharing (prefix caching on).
    caching: bool,
    /// Blocks holding nothing worth keeping.
    free: Vec<u32>,
    refs: Vec<u32>,
    cached: Vec<Option<Cached>>,
    by_hash: HashMap<ChainHash, u32>,
    /// Unreferenced cached blocks by the tick they were released at (oldest first).
    lru: BTreeMap<u64, u32>,
    released_at: Vec<u64>,
    tick: u64,
    stats: PrefixStats,
}

impl BlockPool {
    pub fn new(capacity: usize, caching: bool) -> BlockPool {
        BlockPool {
            capacity,
            caching,
            // Lowest ids first, so a lightly used store touches few pages.
            free: (0..capacity as u32).rev().collect(),
            refs: vec![0; capacity],
            cached: vec![None; capacity],
            by_hash: HashMap::new(),
            lru: BTreeMap::new(),
            released_at: vec![0; capacity],
            tick: 0,
            stats: PrefixStats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Blocks referenced by running sequences.
    pub fn used(&self) -> usize {
        self.capacity - self.free.len() - self.lru.len()
    }

    /// Unreferenced blocks that still hold a cached prefix.
    pub fn cached_idle(&self) -> usize {
        self.lru.len()
    }

    pub fn stats(&self) -> PrefixStats {
        self.stats
    }

    /// Blocks that [`allocate`](Self::allocate) can hand out now.
    pub fn available(&self) -> usize {
        self.free.len() + self.lru.len()
    }

    /// A block for a sequence to write into: a free one, else the least recently released
    /// cached one (its prefix forgotten), else `None`.
    pub fn allocate(&mut self) -> Option<u32> {
        let b = match self.free.pop() {
            Some(b) => b,
            None => {
                let (_, b) = self.lru.pop_first()?;
                self.forget(b);
                self.stats.evicted += 1;
                b
            }
        };
        self.refs[b as usize] = 1;
        Some(b)
    }

    fn forget(&mut self, b: u32) {
        if let Some(c) = self.cached[b as usize].take() {
            if self.by_hash.get(&c.hash) == Some(&b) {
                self.by_hash.remove(&c.hash);
            }
        }
    }

    /// Drops a sequence's reference to `b`; an unreferenced block stays cached if it holds a
    /// registered prefix, else it is free.
    pub fn release(&mut self, b: u32) {
        let r = &mut self.refs[b as usize];
        debug_assert!(*r > 0, "block {b} released more often than taken");
        *r = r.saturating_sub(1);
        if *r > 0 {
            return;
        }
        if self.cached[b as usize].is_some() {
            self.tick += 1;
            self.released_at[b as usize] = self.tick;
            self.lru.insert(self.tick, b);
        } else {
            self.free.push(b);
        }
    }

    /// The cached blocks of the longest prefix of `blocks` (each a full block's tokens and
    /// how many of its rows are prompt-batch rows, in order), each taken with a reference.
    pub fn lookup<'a>(&mut self, blocks: impl Iterator<Item = (&'a [u32], usize)>) -> Vec<u32> {
        let mut found = Vec::new();
        let mut parent = None;
        for (tokens, batched) in blocks {
            debug_assert_eq!(tokens.len(), BLOCK);
            let hash = chain_hash(parent, tokens, batched);
            let hit = self.by_hash.get(&hash).copied().filter(|&b| {
                self.cached[b as usize].as_ref().is_some_and(|c| {
                    c.parent == parent && c.tokens == tokens && c.batched == batched
                })
            });
            match hit {
                Some(b) => {
                    if self.refs[b as usize] == 0 {
                        self.lru.remove(&self.released_at[b as usize]);
                    }
                    self.refs[b as usize] += 1;
                    found.push(b);
                    parent = Some(hash);
                }
                None => break,
            }
        }
        found
    }

    /// Counts a request's prefix lookup: `queried` full prompt blocks, `hits` found.
    pub fn note_lookup(&mut self, queried: usize, hits: usize) {
        self.stats.queried += queried as u64;
        self.stats.hits += hits as u64;
    }

    /// Registers block `b`, now full with `tokens` (the first `batched` rows computed as a
    /// prompt batch) after the block hashed `parent`, as a cached prefix; returns its hash. A
    /// prefix already cached in another block keeps that block (this one is then freed when
    /// released).
    pub fn register(
        &mut self,
        b: u32,
        parent: Option<ChainHash>,
        tokens: &[u32],
        batched: usize,
    ) -> ChainHash {
        let hash = chain_hash(parent, tokens, batched);
        if self.caching && self.cached[b as usize].is_none() && !self.by_hash.contains_key(&hash) {
            self.by_hash.insert(hash, b);
            self.cached[b as usize] = Some(Cached {
                hash,
                parent,
                tokens: tokens.to_vec(),
                batched,
            });
        }
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(seed: u32) -> Vec<u32> {
        (0..BLOCK as u32).map(|i| seed * 1000 + i).collect()
    }

    /// Registers `chain` in freshly allocated blocks and releases them.
    fn cache(pool: &mut BlockPool, chain: &[Vec<u32>]) -> Vec<u32> {
        let mut parent = None;
        let ids: Vec<u32> = chain
            .iter()
            .map(|t| {
                let b = pool.allocate().unwrap();
                parent = Some(pool.register(b, parent, t, BLOCK));
                b
            })
            .collect();
        for &b in &ids {
            pool.release(b);
        }
        ids
    }

    #[test]
    fn a_prefix_is_found_block_by_block_and_shared() {
        let mut pool = BlockPool::new(8, true);
        let chain = [block(1), block(2), block(3)];
        let ids = cache(&mut pool, &chain);
        assert_eq!((pool.used(), pool.cached_idle()), (0, 3));
        // Same first two blocks, then a different third.
        let query = [block(1), block(2), block(9)];
        let got = pool.lookup(query.iter().map(|b| (b.as_slice(), BLOCK)));
        assert_eq!(got, ids[..2]);
        assert_eq!(pool.used(), 2);
        // A second sequence shares them too.
        let again = pool.lookup(chain.iter().map(|b| (b.as_slice(), BLOCK)));
        assert_eq!(again, ids);
        pool.note_lookup(3, 2);
        assert_eq!((pool.stats().queried, pool.stats().hits), (3, 2));
    }

    #[test]
    fn the_same_block_after_another_parent_is_not_a_hit() {
        let mut pool = BlockPool::new(8, true);
        cache(&mut pool, &[block(1), block(2)]);
        let other = [block(7), block(2)];
        assert!(pool
            .lookup(other.iter().map(|b| (b.as_slice(), BLOCK)))
            .is_empty());
        // Nor the same tokens computed in another order (generated rather than prompt rows).
        let b1 = block(1);
        let b2 = block(2);
        let order = [(b1.as_slice(), BLOCK), (b2.as_slice(), 5)];
        assert_eq!(pool.lookup(order.into_iter()).len(), 1);
        // Nor is the second block alone.
        assert!(pool
            .lookup(std::iter::once((block(2).as_slice(), BLOCK)))
            .is_empty());
    }

    #[test]
    fn eviction_takes_the_least_recently_released_and_forgets_it() {
        let mut pool = BlockPool::new(3, true);
        let a = cache(&mut pool, &[block(1)]);
        let b = cache(&mut pool, &[block(2)]);
        let c = cache(&mut pool, &[block(3)]);
        assert_eq!(pool.available(), 3);
        // Touch block(1) again: block(2) is now the oldest.
        let t = pool.lookup(std::iter::once((block(1).as_slice(), BLOCK)));
        pool.release(t[0]);
        let got = pool.allocate().unwrap();
        assert_eq!(got, b[0]);
        assert_eq!(pool.stats().evicted, 1);
        assert!(pool
            .lookup(std::iter::once((block(2).as_slice(), BLOCK)))
            .is_empty());
        assert_eq!(
            pool.lookup(std::iter::once((block(3).as_slice(), BLOCK))),
            c
        );
        assert_eq!(
            pool.lookup(std::iter::once((block(1).as_slice(), BLOCK))),
            a
        );
        assert_eq!(pool.allocate(), None, "every block is referenced");
    }

    #[test]
    fn uncached_blocks_are_freed_and_duplicates_stay_private() {
        let mut pool = BlockPool::new(4, true);
        let x = pool.allocate().unwrap();
        pool.release(x);
        assert_eq!(
            (pool.used(), pool.cached_idle(), pool.available()),
            (0, 0, 4)
        );
        // Two sequences fill the same prefix at once: the first registration wins.
        let (p, q) = (pool.allocate().unwrap(), pool.allocate().unwrap());
        let h1 = pool.register(p, None, &block(5), BLOCK);
        let h2 = pool.register(q, None, &block(5), BLOCK);
        assert_eq!(h1, h2);
        pool.release(q);
        assert_eq!(pool.cached_idle(), 0, "the duplicate is free, not cached");
        pool.release(p);
        assert_eq!(
            pool.lookup(std::iter::once((block(5).as_slice(), BLOCK))),
            [p]
        );
    }

    #[test]
    fn without_caching_nothing_is_kept() {
        let mut pool = BlockPool::new(4, false);
        cache(&mut pool, &[block(1), block(2)]);
        assert_eq!((pool.cached_idle(), pool.available()), (0, 4));
        assert!(pool
            .lookup(std::iter::once((block(1).as_slice(), BLOCK)))
            .is_empty());
    }
}
