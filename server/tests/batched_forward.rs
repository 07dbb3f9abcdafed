//! A batched forward pass gives every sequence exactly the logits it gets alone: several
//! sequences prefilled together, decoded together, and a prompt prefilled in chunks while other
//! sequences decode, all in one paged KV store with scattered blocks. This is what lets the
//! scheduler batch freely without changing any output.

mod common;

use ryzanstein_server::gguf::GgufFile;
use ryzanstein_server::models::{BatchItem, CausalLm, KvStore, Llama};

fn load() -> Llama {
    let g = GgufFile::open(common::model_path()).expect("open model");
    Llama::from_gguf(&g, 2, &Default::default()).expect("load llama")
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

const PROMPTS: [&[u32]; 3] = [
    &[1, 504, 3458, 282, 4649, 314, 2],
    &[
        1, 3479, 1130, 2079, 30, 1097, 314, 253, 1345, 3456, 28, 8701, 9202, 30, 198,
    ],
    &[1, 22, 23, 24],
];
const STEPS: usize = 6;

/// Each prompt alone: prefill, then greedy decode; the logits of every step.
fn alone(model: &Llama) -> Vec<Vec<Vec<f32>>> {
    PROMPTS
        .iter()
        .map(|prompt| {
            let mut state = model.new_state(64);
            let mut logits = model.forward(&mut state, prompt).unwrap();
            let mut all = vec![logits.clone()];
            for _ in 0..STEPS {
                logits = model.forward(&mut state, &[argmax(&logits)]).unwrap();
                all.push(logits.clone());
            }
            all
        })
        .collect()
}

/// Sequences in one shared store: each has a block table of interleaved, reversed block ids
/// (sequence `i` of `n` gets blocks `n * k + i` from the top down), and a length.
struct Paged {
    store: KvStore,
    tables: Vec<Vec<u32>>,
    lens: Vec<usize>,
}

const BLOCKS_EACH: usize = 4;

impl Paged {
    fn new(model: &Llama, n: usize) -> Paged {
        let total = n * BLOCKS_EACH;
        let tables = (0..n)
            .map(|i| {
                (0..BLOCKS_EACH)
                    .map(|k| (total - 1 - (n * k + i)) as u32)
                    .collect()
            })
            .collect();
        Paged {
            store: KvStore::new(model.kv_shape(), total),
            tables,
            lens: vec![0; n],
        }
    }

    /// One forward pass of `(sequence, tokens, logits?)` items; the logits asked for.
    fn run(&mut self, model: &Llama, batch: &[(usize, &[u32], bool)]) -> Vec<Option<Vec<f32>>> {
        let items: Vec<BatchItem<'_>> = batch
            .iter()
            .map(|&(i, tokens, logits)| BatchItem {
                table: &self.tables[i],
                start: self.lens[i],
                tokens,
                logits: usize::from(logits),
                batched: tokens.len() > 1,
            })
            .collect();
        let out = model.forward_batch(&mut self.store, &items).unwrap();
        for &(i, tokens, _) in batch {
            self.lens[i] += tokens.len();
        }
        out.into_iter()
            .map(|l| (!l.is_empty()).then_some(l))
            .collect()
    }
}

fn decode_together(model: &Llama, cache: &mut Paged, got: &mut [Vec<Vec<f32>>]) {
    for _ in 0..STEPS {
        let next: Vec<[u32; 1]> = got.iter().map(|g| [argmax(g.last().unwrap())]).collect();
        let batch: Vec<(usize, &[u32], bool)> = next
            .iter()
            .enumerate()
            .map(|(i, t)| (i, t.as_slice(), true))
            .collect();
        let out = cache.run(model, &batch);
        for (g, o) in got.iter_mut().zip(out) {
            g.push(o.expect("logits asked for"));
        }
    }
}

#[test]
fn batched_prefill_and_decode_equal_each_sequence_alone() {
    let model = load();
    let want = alone(&model);

    let mut cache = Paged::new(&model, PROMPTS.len());
    let batch: Vec<(usize, &[u32], bool)> = PROMPTS
        .iter()
        .enumerate()
        .map(|(i, p)| (i, *p, true))
        .collect();
    let mut got: Vec<Vec<Vec<f32>>> = cache
        .run(&model, &batch)
        .into_iter()
        .map(|o| vec![o.unwrap()])
        .collect();
    decode_together(&model, &mut cache, &mut got);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), w.len());
        for (step, (a, b)) in g.iter().zip(w).enumerate() {
            assert!(a == b, "sequence {i} step {step}: batched logits differ");
        }
    }
}

#[test]
fn a_prompt_prefilled_in_chunks_beside_decoding_sequences_is_unchanged() {
    let model = load();
    let want = alone(&model);

    // Sequences 0 and 2 are prefilled first; sequence 1's prompt then goes in chunks of 4
    // tokens, each chunk in the same pass as a decode step of the other two.
    let mut cache = Paged::new(&model, PROMPTS.len());
    let mut got: Vec<Vec<Vec<f32>>> = vec![Vec::new(); 3];
    let out = cache.run(&model, &[(0, PROMPTS[0], true), (2, PROMPTS[2], true)]);
    got[0].push(out[0].clone().unwrap());
    got[2].push(out[1].clone().unwrap());
    let prompt = PROMPTS[1];
    let chunks: Vec<&[u32]> = prompt.chunks(4).collect();
    for (n, chunk) in chunks.iter().enumerate() {
        let last = n + 1 == chunks.len();
        let t0 = [argmax(got[0].last().unwrap())];
        let t2 = [argmax(got[2].last().unwrap())];
        let out = cache.run(&model, &[(0, &t0, true), (1, chunk, last), (2, &t2, true)]);
        assert_eq!(
            out[1].is_some(),
            last,
            "logits only for the prompt's last chunk"
        );
        got[0].push(out[0].clone().unwrap());
        got[2].push(out[2].clone().unwrap());
        if last {
            got[1].push(out[1].clone().unwrap());
        }
    }
    // Sequence 1 now decodes alone to its STEPS; compare what each sequence has.
    while got[1].len() < STEPS + 1 {
        let next = [argmax(got[1].last().unwrap())];
        let out = cache.run(&model, &[(1, &next, true)]);
        got[1].push(out[0].clone().unwrap());
    }
    for (i, g) in got.iter().enumerate() {
        for (step, a) in g.iter().enumerate().take(STEPS + 1) {
            assert!(
                a == &want[i][step],
                "sequence {i} step {step}: logits differ"
            );
        }
    }
}

#[test]
fn logits_of_several_positions_equal_those_of_shorter_chunks() {
    // What verifying drafted tokens needs: the logits of each of an item's last k positions
    // equal the last-position logits of a chunk ending there. (A chunk of one token is a
    // decode step, which sums attention in another order, so chunks of two or more.)
    let model = load();
    let prompt = PROMPTS[1];
    let (head, tail) = prompt.split_at(prompt.len() - 4);
    let mut cache = Paged::new(&model, 1);
    cache.run(&model, &[(0, head, false)]);
    let items = [BatchItem {
        table: &cache.tables[0],
        start: head.len(),
        tokens: tail,
        logits: tail.len(),
        batched: true,
    }];
    let all = model.forward_batch(&mut cache.store, &items).unwrap();
    let vocab = model.vocab_size();
    assert_eq!(all[0].len(), tail.len() * vocab);
    for k in 2..=tail.len() {
        let mut alone = Paged::new(&model, 1);
        alone.run(&model, &[(0, head, false)]);
        let one = alone.run(&model, &[(0, &tail[..k], true)]);
        assert!(
            one[0].as_ref().unwrap()[..] == all[0][(k - 1) * vocab..k * vocab],
            "position {k}: multi-position logits differ"
        );
    }
}
