//! A batched forward pass gives every sequence exactly the logits it gets alone: several
//! sequences prefilled together, decoded together, and a prompt prefilled in chunks while other
//! sequences decode. This is what lets the scheduler batch freely without changing any output.

mod common;

use ryzanstein_server::gguf::GgufFile;
use ryzanstein_server::models::{BatchItem, CausalLm, Llama, SeqState};

fn load() -> Llama {
    let g = GgufFile::open(common::model_path()).expect("open model");
    Llama::from_gguf(&g, 2).expect("load llama")
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

fn decode_together(model: &Llama, states: &mut [SeqState], got: &mut [Vec<Vec<f32>>]) {
    for _ in 0..STEPS {
        let next: Vec<[u32; 1]> = got.iter().map(|g| [argmax(g.last().unwrap())]).collect();
        let mut items: Vec<BatchItem<'_>> = states
            .iter_mut()
            .zip(&next)
            .map(|(state, tok)| BatchItem {
                state,
                tokens: tok,
                logits: true,
            })
            .collect();
        let out = model.forward_batch(&mut items).unwrap();
        for (g, o) in got.iter_mut().zip(out) {
            g.push(o.expect("logits asked for"));
        }
    }
}

#[test]
fn batched_prefill_and_decode_equal_each_sequence_alone() {
    let model = load();
    let want = alone(&model);

    let mut states: Vec<SeqState> = PROMPTS.iter().map(|_| model.new_state(64)).collect();
    let mut items: Vec<BatchItem<'_>> = states
        .iter_mut()
        .zip(PROMPTS)
        .map(|(state, tokens)| BatchItem {
            state,
            tokens,
            logits: true,
        })
        .collect();
    let mut got: Vec<Vec<Vec<f32>>> = model
        .forward_batch(&mut items)
        .unwrap()
        .into_iter()
        .map(|o| vec![o.unwrap()])
        .collect();
    decode_together(&model, &mut states, &mut got);
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
    let mut states: Vec<SeqState> = PROMPTS.iter().map(|_| model.new_state(64)).collect();
    let mut got: Vec<Vec<Vec<f32>>> = vec![Vec::new(); 3];
    {
        let (a, rest) = states.split_at_mut(1);
        let (_, c) = rest.split_at_mut(1);
        let mut items = [
            BatchItem {
                state: &mut a[0],
                tokens: PROMPTS[0],
                logits: true,
            },
            BatchItem {
                state: &mut c[0],
                tokens: PROMPTS[2],
                logits: true,
            },
        ];
        let out = model.forward_batch(&mut items).unwrap();
        got[0].push(out[0].clone().unwrap());
        got[2].push(out[1].clone().unwrap());
    }
    let prompt = PROMPTS[1];
    let chunks: Vec<&[u32]> = prompt.chunks(4).collect();
    for (n, chunk) in chunks.iter().enumerate() {
        let last = n + 1 == chunks.len();
        let t0 = [argmax(got[0].last().unwrap())];
        let t2 = [argmax(got[2].last().unwrap())];
        let (a, rest) = states.split_at_mut(1);
        let (b, c) = rest.split_at_mut(1);
        let mut items = [
            BatchItem {
                state: &mut a[0],
                tokens: &t0,
                logits: true,
            },
            BatchItem {
                state: &mut b[0],
                tokens: chunk,
                logits: last,
            },
            BatchItem {
                state: &mut c[0],
                tokens: &t2,
                logits: true,
            },
        ];
        let out = model.forward_batch(&mut items).unwrap();
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
    let mut state1 = states.remove(1);
    while got[1].len() < STEPS + 1 {
        let next = argmax(got[1].last().unwrap());
        got[1].push(model.forward(&mut state1, &[next]).unwrap());
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
