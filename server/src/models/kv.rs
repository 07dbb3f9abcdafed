//! The key/value cache storage: fixed-size blocks of positions (a paged cache).
//!
//! A [`KvStore`] holds `blocks` blocks of [`BLOCK`] positions for every layer of one model. A
//! sequence's cache is a block table (block ids, in position order): position `p` lives in
//! block `table[p / BLOCK]`, slot `p % BLOCK`. Per layer and block, keys are position-major
//! (`BLOCK x kv_dim`) and values transposed (`kv_dim x BLOCK`, one row of positions per value
//! dimension, as llama.cpp stores them without flash attention), so the attention kernels read
//! each block as one segment of a row ([`ryzanstein_kernels::seg_rows`]) and give the bits of a
//! contiguous cache. Values are f16, like llama.cpp's default cache type.
//!
//! The store only holds data; which blocks belong to whom is the engine's business
//! (`engine::blocks`). [`SeqState`] is a single sequence with a store of its own, for callers
//! that run one sequence at a time.

use half::f16;

/// Positions per block: the attention's padding, so that a sequence's padded positions never
/// reach past its last block.
pub const BLOCK: usize = ryzanstein_kernels::attention::PAD;

/// The shape of a model's cache: what a block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvShape {
    pub layers: usize,
    /// Key (and value) values per position and layer: KV heads times head size.
    pub kv_dim: usize,
}

impl KvShape {
    /// Bytes of one block: keys and values of [`BLOCK`] positions in every layer.
    pub fn bytes_per_block(&self) -> usize {
        self.layers * 2 * BLOCK * self.kv_dim * std::mem::size_of::<f16>()
    }
}

/// Block storage for one model's cache.
pub struct KvStore {
    shape: KvShape,
    blocks: usize,
    /// `k[layer]`: `blocks x BLOCK x kv_dim`.
    k: Vec<Vec<f16>>,
    /// `v[layer]`: `blocks x kv_dim x BLOCK`.
    v: Vec<Vec<f16>>,
}

/// A zeroed buffer; the pages are only committed when written (so a large budget costs memory
/// as blocks are used, not up front).
fn zeroed(n: usize) -> Vec<f16> {
    bytemuck::zeroed_vec(n)
}

impl KvStore {
    pub fn new(shape: KvShape, blocks: usize) -> KvStore {
        let per_layer = blocks * BLOCK * shape.kv_dim;
        KvStore {
            shape,
            blocks,
            k: (0..shape.layers).map(|_| zeroed(per_layer)).collect(),
            v: (0..shape.layers).map(|_| zeroed(per_layer)).collect(),
        }
    }

    pub fn shape(&self) -> KvShape {
        self.shape
    }

    /// Blocks the store holds.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Grows the store to at least `blocks` blocks, keeping what it holds.
    pub fn grow(&mut self, blocks: usize) {
        if blocks <= self.blocks {
            return;
        }
        let per_layer = blocks * BLOCK * self.shape.kv_dim;
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            buf.resize(per_layer, f16::ZERO);
        }
        self.blocks = blocks;
    }

    fn block_len(&self) -> usize {
        BLOCK * self.shape.kv_dim
    }

    /// Keys of block `b` in `layer`: `BLOCK` rows of `kv_dim`.
    pub(crate) fn keys(&self, layer: usize, b: u32) -> &[f16] {
        let n = self.block_len();
        &self.k[layer][b as usize * n..][..n]
    }

    /// Values of block `b` in `layer`: `kv_dim` rows of `BLOCK` positions.
    pub(crate) fn values(&self, layer: usize, b: u32) -> &[f16] {
        let n = self.block_len();
        &self.v[layer][b as usize * n..][..n]
    }

    /// Writes the keys and values of positions `start..start + t` of the sequence with block
    /// table `table` in `layer` (`keys` and `values` are `t x kv_dim`, position-major), and
    /// zeros the value slots after the last position up to its block's end (the padding a
    /// single query's attention multiplies by zero weights).
    pub(crate) fn write(
        &mut self,
        layer: usize,
        table: &[u32],
        start: usize,
        keys: &[f16],
        values: &[f16],
    ) {
        let kv_dim = self.shape.kv_dim;
        let n = self.block_len();
        let t = keys.len() / kv_dim;
        let (kc, vc) = (&mut self.k[layer], &mut self.v[layer]);
        for (i, (krow, vrow)) in keys
            .chunks_exact(kv_dim)
            .zip(values.chunks_exact(kv_dim))
            .enumerate()
        {
            let p = start + i;
            let (b, slot) = (table[p / BLOCK] as usize, p % BLOCK);
            kc[b * n + slot * kv_dim..][..kv_dim].copy_from_slice(krow);
            let vb = &mut vc[b * n..][..n];
            for (e, &val) in vrow.iter().enumerate() {
                vb[e * BLOCK + slot] = val;
            }
        }
        let end = start + t;
        if t > 0 && !end.is_multiple_of(BLOCK) {
            let vb = &mut vc[table[end / BLOCK] as usize * n..][..n];
            for row in vb.chunks_exact_mut(BLOCK) {
                row[end % BLOCK..].fill(f16::ZERO);
            }
        }
    }
}

/// Blocks needed for `positions` positions.
pub fn blocks_for(positions: usize) -> usize {
    positions.div_ceil(BLOCK)
}

/// One sequence's cache with a store of its own (blocks `0, 1, ...` in order), for running one
/// sequence at a time ([`CausalLm::forward`](super::CausalLm::forward)).
pub struct SeqState {
    pub(crate) store: KvStore,
    pub(crate) table: Vec<u32>,
    pub(crate) len: usize,
    pub(crate) max_len: usize,
}

impl SeqState {
    /// An empty state (the store grows on demand, up to `max_len` positions).
    pub fn new(shape: KvShape, max_len: usize) -> SeqState {
        SeqState {
            store: KvStore::new(shape, 0),
            table: Vec::new(),
            len: 0,
            max_len,
        }
    }

    /// Makes room for `positions` positions (the store doubles, up to the capacity).
    pub(crate) fn reserve(&mut self, positions: usize) {
        let need = blocks_for(positions);
        if need > self.store.blocks() {
            let cap = blocks_for(self.max_len);
            let grown = need.max((2 * self.store.blocks()).min(cap)).max(8.min(cap));
            self.store.grow(grown);
        }
        while self.table.len() < need {
            self.table.push(self.table.len() as u32);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn max_len(&self) -> usize {
        self.max_len
    }
    /// Forget every position from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_land_in_the_table_blocks_and_pad_with_zeros() {
        let shape = KvShape {
            layers: 1,
            kv_dim: 2,
        };
        let mut store = KvStore::new(shape, 4);
        let table = [3u32, 1];
        // 40 positions: block 3 full, block 1 holds 8; keys = position, values = -position.
        let keys: Vec<f16> = (0..80).map(|i| f16::from_f32((i / 2) as f32)).collect();
        let values: Vec<f16> = keys.iter().map(|k| -*k).collect();
        store.write(0, &table, 0, &keys, &values);
        assert_eq!(store.keys(0, 3)[2 * 5].to_f32(), 5.0);
        assert_eq!(store.keys(0, 1)[2 * 7 + 1].to_f32(), 39.0);
        assert_eq!(store.values(0, 1)[BLOCK + 7].to_f32(), -39.0);
        assert!(store.values(0, 0).iter().all(|v| v.to_f32() == 0.0));
        // Rewriting a shorter tail zeros the values after it.
        store.write(0, &table, 33, &keys[..2], &values[..2]);
        assert_eq!(store.values(0, 1)[1].to_f32(), 0.0);
        assert!(store.values(0, 1)[2..BLOCK]
            .iter()
            .all(|v| v.to_f32() == 0.0));
        assert_eq!(store.values(0, 1)[0].to_f32(), -32.0);
        assert_eq!(shape.bytes_per_block(), 2 * BLOCK * 2 * 2);
    }

    #[test]
    fn a_state_grows_its_own_store() {
        let mut s = SeqState::new(
            KvShape {
                layers: 2,
                kv_dim: 4,
            },
            100,
        );
        s.reserve(33);
        assert_eq!(s.table, [0, 1]);
        assert!(s.store.blocks() >= 2);
        s.reserve(100);
        assert_eq!(s.table.len(), 4);
        assert_eq!(s.store.blocks(), 4);
    }
}
