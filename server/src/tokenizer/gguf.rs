//! Building a tokenizer from GGUF `tokenizer.ggml.*` metadata, following llama.cpp's
//! `llama_vocab::load`: vocabulary, token types, merges (or SentencePiece scores), special ids,
//! the BOS default per model type, and the end-of-generation set.

use std::collections::{HashMap, HashSet};

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::Replace;
use tokenizers::AddedToken;

use super::{
    byte_level_decode, pretokenizers, spm_byte_token, Encoder, SpecialText, TokenKind, Tokenizer,
    EOG_TEXTS,
};
use crate::error::{Error, Result};
use crate::gguf::GgufHeader;

/// The tokenizer facts a GGUF file carries, read out of its metadata.
#[derive(Debug, Clone, Default)]
pub(super) struct GgufVocab {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) or `"llama"` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
    /// 6 byte).
    pub token_types: Option<Vec<i32>>,
    pub scores: Option<Vec<f32>>,
    pub merges: Option<Vec<String>>,
    /// Special ids by key suffix (`bos`, `eos`, `eot`, `eom`, `unknown`, `padding`, `fim_pre`,
    /// ...), as written in the file.
    pub special_ids: HashMap<&'static str, u32>,
    pub add_bos: Option<bool>,
    pub add_space_prefix: Option<bool>,
    /// `general.name`, which llama.cpp consults for per-model token attributes.
    pub model_name: Option<String>,
}

/// The `tokenizer.ggml.<name>_token_id` keys llama.cpp reads.
const SPECIAL_ID_KEYS: &[&str] = &[
    "bos",
    "eos",
    "eot",
    "eom",
    "unknown",
    "seperator",
    "padding",
    "mask",
    "fim_pre",
    "fim_suf",
    "fim_mid",
    "fim_pad",
    "fim_rep",
    "fim_sep",
    "prefix",
    "suffix",
    "middle",
];

impl GgufVocab {
    pub(super) fn read(g: &GgufHeader) -> Result<GgufVocab> {
        let model = g.get_str("tokenizer.ggml.model")?.to_owned();
        let mut special_ids = HashMap::new();
        for &k in SPECIAL_ID_KEYS {
            if let Some(id) = g.opt_u32(&format!("tokenizer.ggml.{k}_token_id"))? {
                special_ids.insert(k, id);
            }
        }
        let scores = match g.get("tokenizer.ggml.scores") {
            None => None,
            Some(_) => Some(g.get_f32_array("tokenizer.ggml.scores")?),
        };
        let token_types = match g.get("tokenizer.ggml.token_type") {
            None => None,
            Some(_) => Some(g.get_i32_array("tokenizer.ggml.token_type")?),
        };
        let merges = match g.get("tokenizer.ggml.merges") {
            None => None,
            Some(_) => Some(
                g.get_str_array("tokenizer.ggml.merges")?
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            ),
        };
        Ok(GgufVocab {
            model,
            pre: g.opt_str("tokenizer.ggml.pre")?.map(str::to_owned),
            tokens: g
                .get_str_array("tokenizer.ggml.tokens")?
                .into_iter()
                .map(str::to_owned)
                .collect(),
            token_types,
            scores,
            merges,
            special_ids,
            add_bos: g.opt_bool("tokenizer.ggml.add_bos_token")?,
            add_space_prefix: g.opt_bool("tokenizer.ggml.add_space_prefix")?,
            model_name: g.opt_str("general.name")?.map(str::to_owned),
        })
    }
}

fn kind_of(token_type: i32) -> TokenKind {
    match token_type {
        2 => TokenKind::Unknown,
        3 => TokenKind::Control,
        4 => TokenKind::UserDefined,
        5 => TokenKind::Unused,
        6 => TokenKind::Byte,
        // 1 (normal); 0 (undefined) and others render like normal tokens in practice.
        _ => TokenKind::Normal,
    }
}

/// Texts llama.cpp recognises for the FIM slots when the file does not name their ids.
const FIM_TEXTS: &[(&str, &[&str])] = &[
    (
        "fim_pre",
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<\u{ff5c}fim\u{2581}begin\u{ff5c}>",
            "<PRE>",
            "\u{2581}<PRE>",
            "<|code_prefix|>",
        ],
    ),
    (
        "fim_suf",
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<\u{ff5c}fim\u{2581}hole\u{ff5c}>",
            "<SUF>",
            "\u{2581}<SUF>",
            "<|code_suffix|>",
        ],
    ),
    (
        "fim_mid",
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<\u{ff5c}fim\u{2581}end\u{ff5c}>",
            "<MID>",
            "\u{2581}<MID>",
            "<|code_middle|>",
        ],
    ),
    (
        "fim_pad",
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>"],
    ),
    (
        "fim_rep",
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("fim_sep", &["<|file_sep|>"]),
];

/// Texts llama.cpp recognises as end-of-turn (EOT) when the file does not name its id.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "<end_of_utterance>",
];

/// Builds the tokenizer for `v`.
pub(super) fn build(v: &GgufVocab) -> Result<Tokenizer> {
    let n = v.tokens.len();
    if n == 0 {
        return Err(Error::Tokenizer(
            "GGUF key tokenizer.ggml.tokens is empty; the file has no vocabulary".into(),
        ));
    }
    // llama.cpp renames empty tokens so that every text is unique and non-empty.
    let tokens: Vec<String> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                t.clone()
            }
        })
        .collect();
    let mut ids: HashMap<&str, u32> = HashMap::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        if let Some(prev) = ids.insert(t.as_str(), i as u32) {
            return Err(Error::Tokenizer(format!(
                "GGUF key tokenizer.ggml.tokens: duplicate token {t:?} at ids {prev} and {i}; \
                 the vocabulary is corrupt, reconvert the model"
            )));
        }
    }
    let mut kinds: Vec<TokenKind> = match &v.token_types {
        Some(tt) => {
            if tt.len() < n {
                return Err(Error::Tokenizer(format!(
                    "GGUF key tokenizer.ggml.token_type has {} entries for {n} tokens",
                    tt.len()
                )));
            }
            tt[..n].iter().map(|&t| kind_of(t)).collect()
        }
        None => vec![TokenKind::Normal; n],
    };

    // Model type defaults (llama.cpp `llama_vocab::impl::load`).
    let (is_spm, mut bos, mut eos, mut add_bos, pre_spec) = match v.model.as_str() {
        "llama" => (true, Some(1u32), Some(2u32), true, None),
        "gpt2" => {
            let spec = pretokenizers::spec_or_default(v.pre.as_deref());
            let add_bos = spec.add_bos;
            (false, Some(11), Some(11), add_bos, Some(spec))
        }
        other => {
            return Err(Error::Tokenizer(format!(
                "GGUF tokenizer.ggml.model {other:?} is not supported (supported: \"gpt2\" \
                 byte-level BPE, \"llama\" SentencePiece)"
            )))
        }
    };
    let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
    bos = in_range(bos);
    eos = in_range(eos);
    let mut special: HashMap<&str, u32> = HashMap::new();
    for (&k, &id) in &v.special_ids {
        if (id as usize) < n {
            special.insert(k, id);
        } else {
            tracing::warn!(
                "GGUF key tokenizer.ggml.{k}_token_id = {id} is outside the vocabulary \
                 ({n} tokens); ignoring it"
            );
        }
    }
    if let Some(&b) = special.get("bos") {
        bos = Some(b);
    }
    if let Some(&e) = special.get("eos") {
        eos = Some(e);
    }
    if let Some(a) = v.add_bos {
        add_bos = a;
    }
    if add_bos && bos.is_none() {
        return Err(Error::Tokenizer(
            "GGUF says tokenizer.ggml.add_bos_token = true but has no BOS token id".into(),
        ));
    }

    // Slots llama.cpp fills by token text when the file leaves them out; tokens found this way
    // become control tokens.
    let force_control = |id: u32, kinds: &mut Vec<TokenKind>| {
        if kinds[id as usize] != TokenKind::Control {
            tracing::debug!(
                "token {id} {:?} looks like a control token; treating it as one",
                tokens[id as usize]
            );
            kinds[id as usize] = TokenKind::Control;
        }
    };
    let mut eot = special.get("eot").copied();
    let mut eom = special.get("eom").copied();
    // Token-id order stands in for llama.cpp's hash-map order where several texts match.
    if eot.is_none() {
        eot = EOT_TEXTS.iter().filter_map(|t| ids.get(t).copied()).min();
        if let Some(id) = eot {
            force_control(id, &mut kinds);
        }
    }
    if eom.is_none() {
        eom = ids.get("<|eom_id|>").copied();
        if let Some(id) = eom {
            force_control(id, &mut kinds);
        }
    }
    let mut fim: HashMap<&str, u32> = HashMap::new();
    for &(slot, texts) in FIM_TEXTS {
        let given = special.get(slot).copied().or_else(|| match slot {
            "fim_pre" => special.get("prefix").copied(),
            "fim_suf" => special.get("suffix").copied(),
            "fim_mid" => special.get("middle").copied(),
            _ => None,
        });
        let id = match given {
            Some(id) => Some(id),
            None => {
                let found = texts.iter().filter_map(|t| ids.get(t).copied()).min();
                if let Some(id) = found {
                    force_control(id, &mut kinds);
                }
                found
            }
        };
        if let Some(id) = id {
            fim.insert(slot, id);
        }
    }

    let mut eog: HashSet<u32> = HashSet::new();
    for slot in ["fim_pad", "fim_rep", "fim_sep"] {
        if let Some(&id) = fim.get(slot) {
            eog.insert(id);
        }
    }
    for t in EOG_TEXTS {
        if let Some(&id) = ids.get(t) {
            eog.insert(id);
            force_control(id, &mut kinds);
        }
    }
    // gpt-oss: these render as text.
    for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
        if let Some(&id) = ids.get(t) {
            kinds[id as usize] = TokenKind::UserDefined;
        }
    }
    eog.extend(eos);
    eog.extend(eot);
    eog.extend(eom);
    // o200k_harmony and solar-open: "<|end|>" ends a message, not generation.
    let has = |eog: &HashSet<u32>, t: &str| ids.get(t).is_some_and(|id| eog.contains(id));
    if (has(&eog, "<|return|>") && has(&eog, "<|call|>")
        || has(&eog, "<|calls|>") && has(&eog, "<|flush|>"))
        && has(&eog, "<|end|>")
    {
        let end = ids["<|end|>"];
        eog.remove(&end);
        kinds[end as usize] = TokenKind::UserDefined;
    }
    // gemma4 and paddleocr: "</s>" is not an end of generation there.
    if has(&eog, "<|tool_response>") && has(&eog, "</s>") {
        let s = ids["</s>"];
        eog.remove(&s);
        kinds[s as usize] = TokenKind::Normal;
    }
    let mut eog: Vec<u32> = eog.into_iter().collect();
    eog.sort_unstable();

    // Tokens split out of text before BPE: control, user-defined and unknown, longest first.
    let model_name = v.model_name.as_deref().unwrap_or("").to_lowercase();
    let phi3 = model_name.contains("phi-3") || model_name.contains("phi3");
    let mut specials: Vec<SpecialText> = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| {
            matches!(
                k,
                TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown
            )
        })
        .map(|(i, _)| {
            let text = tokens[i].clone();
            let rstrip = phi3 && !matches!(text.as_str(), "<unk>" | "<s>" | "<|endoftext|>");
            SpecialText {
                text,
                id: i as u32,
                lstrip: false,
                rstrip,
            }
        })
        .collect();
    specials.sort_by_key(|s| std::cmp::Reverse(s.text.len()));

    // Pieces: what llama_token_to_piece(special = true) renders.
    let pieces: Vec<Vec<u8>> = tokens
        .iter()
        .zip(&kinds)
        .map(|(t, k)| match k {
            TokenKind::Control | TokenKind::Unknown | TokenKind::UserDefined => {
                t.as_bytes().to_vec()
            }
            TokenKind::Normal if is_spm => t.replace('\u{2581}', " ").into_bytes(),
            TokenKind::Normal => byte_level_decode(t),
            TokenKind::Byte => spm_byte_token(t).map(|b| vec![b]).unwrap_or_default(),
            TokenKind::Unused => Vec::new(),
        })
        .collect();

    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let (inner, encoder) = if is_spm {
        let scores = v.scores.as_deref().ok_or_else(|| {
            Error::Tokenizer(
                "GGUF key tokenizer.ggml.scores is missing; a SentencePiece (\"llama\") \
                 vocabulary needs token scores"
                    .into(),
            )
        })?;
        if scores.len() < n {
            return Err(Error::Tokenizer(format!(
                "GGUF key tokenizer.ggml.scores has {} entries for {n} tokens",
                scores.len()
            )));
        }
        let merges = spm_merges(&tokens, &ids, scores);
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .byte_fallback(true)
            .build()
            .map_err(|e| Error::Tokenizer(format!("building SentencePiece BPE: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let decoder = DecoderSequence::new(vec![
            DecoderWrapper::Replace(
                Replace::new("\u{2581}", " ").map_err(|e| Error::Tokenizer(e.to_string()))?,
            ),
            DecoderWrapper::ByteFallback(ByteFallback::new()),
            DecoderWrapper::Fuse(Fuse::new()),
            DecoderWrapper::Strip(Strip::new(' ', 1, 0)),
        ]);
        inner.with_decoder(Some(decoder));
        let add_space_prefix = v.add_space_prefix.unwrap_or(true);
        (
            inner,
            Encoder::LlamaSpm {
                specials,
                add_space_prefix,
            },
        )
    } else {
        let spec = pre_spec.expect("gpt2 has a pre-tokenizer spec");
        let raw = v.merges.as_deref().ok_or_else(|| {
            Error::Tokenizer(
                "GGUF key tokenizer.ggml.merges is missing; a byte-level BPE (\"gpt2\") \
                 vocabulary needs merges"
                    .into(),
            )
        })?;
        let merges = bpe_merges(raw, &ids);
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(spec.ignore_merges)
            .build()
            .map_err(|e| Error::Tokenizer(format!("building byte-level BPE: {e}")))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pretokenizers::build(&spec)?));
        inner.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
        (inner, Encoder::LlamaBpe { specials })
    };
    let mut inner = inner;
    let added: Vec<AddedToken> = kinds
        .iter()
        .enumerate()
        .filter_map(|(i, k)| match k {
            TokenKind::Control | TokenKind::Unknown => {
                Some(AddedToken::from(tokens[i].clone(), true))
            }
            TokenKind::UserDefined => Some(AddedToken::from(tokens[i].clone(), false)),
            _ => None,
        })
        .collect();
    inner.add_special_tokens(&added);

    Ok(Tokenizer {
        inner,
        encoder,
        kinds,
        pieces,
        decode_with_inner: false,
        bos,
        eos,
        add_bos,
        eog,
    })
}

/// Byte-level merges from `"left right"` strings (split at the first space after the first
/// byte, as llama.cpp does). Merges naming a token missing from the vocabulary can never
/// produce a token, so they are dropped (with a count in the log).
fn bpe_merges(raw: &[String], ids: &HashMap<&str, u32>) -> Vec<(String, String)> {
    let mut merges = Vec::with_capacity(raw.len());
    let mut dropped = 0usize;
    for m in raw {
        let Some(pos) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
            dropped += 1;
            continue;
        };
        let (l, r) = (&m[..pos], &m[pos + 1..]);
        let merged = format!("{l}{r}");
        if ids.contains_key(l) && ids.contains_key(r) && ids.contains_key(merged.as_str()) {
            merges.push((l.to_owned(), r.to_owned()));
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        tracing::warn!(
            "GGUF key tokenizer.ggml.merges: dropped {dropped} merges that are malformed or \
             name tokens missing from the vocabulary"
        );
    }
    merges
}

/// SentencePiece merges from scores, as Hugging Face's `SentencePieceExtractor` derives them:
/// every split of a piece into two pieces that are both in the vocabulary is a merge, ranked by
/// the merged piece's score (higher first), ties in vocabulary order.
fn spm_merges(
    tokens: &[String],
    ids: &HashMap<&str, u32>,
    scores: &[f32],
) -> Vec<(String, String)> {
    let mut merges: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (merged_id, piece) in tokens.iter().enumerate() {
        let mut local: Vec<(u32, u32)> = Vec::new();
        for (split, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(split);
            if let (Some(&li), Some(&ri)) = (ids.get(l), ids.get(r)) {
                local.push((li, ri));
            }
        }
        local.sort_unstable();
        merges.extend(
            local
                .into_iter()
                .map(|(l, r)| (scores[merged_id], merged_id as u32, l, r)),
        );
    }
    // Stable sort on score alone keeps vocabulary order among equal scores.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges
        .into_iter()
        .map(|(_, _, l, r)| (tokens[l as usize].clone(), tokens[r as usize].clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny SentencePiece vocabulary: control tokens, byte fallback for every byte, and a few
    /// pieces whose scores decide the merge order.
    fn spm_vocab() -> GgufVocab {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, 3, 3];
        let mut scores = vec![0.0, 0.0, 0.0];
        for b in 0..=255u32 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        let pieces: &[(&str, f32)] = &[
            ("\u{2581}", -1.0),
            ("h", -2.0),
            ("e", -2.0),
            ("l", -2.0),
            ("o", -2.0),
            ("w", -2.0),
            ("r", -2.0),
            ("d", -2.0),
            ("ll", -3.0),
            ("he", -4.0),
            ("llo", -5.0),
            ("hello", -6.0),
            ("\u{2581}hello", -7.0),
            ("\u{2581}w", -8.0),
            ("or", -9.0),
            ("\u{2581}wor", -10.0),
            ("ld", -11.0),
            ("<|im_end|>", 0.0),
        ];
        for (p, s) in pieces {
            tokens.push((*p).into());
            types.push(if *p == "<|im_end|>" { 3 } else { 1 });
            scores.push(*s);
        }
        GgufVocab {
            model: "llama".into(),
            tokens,
            token_types: Some(types),
            scores: Some(scores),
            ..Default::default()
        }
    }

    fn piece_ids(tok: &Tokenizer, pieces: &[&str]) -> Vec<u32> {
        pieces.iter().map(|p| tok.token_id(p).unwrap()).collect()
    }

    #[test]
    fn spm_merges_follow_scores_and_prefix_a_space() {
        let tok = build(&spm_vocab()).unwrap();
        assert!(tok.add_bos());
        assert_eq!(tok.bos_id(), Some(1));
        let ids = tok.encode("hello world", false).unwrap();
        assert_eq!(
            ids,
            piece_ids(&tok, &["\u{2581}hello", "\u{2581}wor", "ld"]),
            "{ids:?}"
        );
        assert_eq!(tok.decode(&ids, true).unwrap(), " hello world");
        let with_bos = tok.encode("hello", true).unwrap();
        assert_eq!(with_bos[0], 1);
    }

    #[test]
    fn spm_falls_back_to_bytes_and_splits_special_tokens() {
        let tok = build(&spm_vocab()).unwrap();
        let ids = tok.encode("hé<|im_end|>d\n", false).unwrap();
        let im_end = tok.token_id("<|im_end|>").unwrap();
        let mut want = piece_ids(&tok, &["\u{2581}", "h", "<0xC3>", "<0xA9>"]);
        want.push(im_end);
        // After a special token llama.cpp prefixes a space again.
        want.extend(piece_ids(&tok, &["\u{2581}", "d", "<0x0A>"]));
        assert_eq!(ids, want);
        assert_eq!(tok.decode(&ids, true).unwrap(), " hé d\n");
        assert_eq!(tok.decode(&ids, false).unwrap(), " hé<|im_end|> d\n");
        assert!(tok.eos_ids().contains(&2) && tok.eos_ids().contains(&im_end));
        assert!(tok.is_special(im_end) && !tok.is_special(tok.token_id("h").unwrap()));
    }

    #[test]
    fn spm_add_space_prefix_can_be_disabled() {
        let mut v = spm_vocab();
        v.add_space_prefix = Some(false);
        let tok = build(&v).unwrap();
        assert_eq!(
            tok.encode("hello", false).unwrap(),
            piece_ids(&tok, &["hello"])
        );
    }

    #[test]
    fn spm_merge_ranks_come_from_scores() {
        let v = spm_vocab();
        let ids: HashMap<&str, u32> = v
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        let merges = spm_merges(&v.tokens, &ids, v.scores.as_ref().unwrap());
        let pos = |l: &str, r: &str| {
            merges
                .iter()
                .position(|(a, b)| a == l && b == r)
                .unwrap_or_else(|| panic!("no merge {l} {r}"))
        };
        assert!(pos("l", "l") < pos("h", "e"));
        assert!(pos("h", "e") < pos("ll", "o"));
        // "hello" splits two ways in the vocabulary; both are merges of the same rank group.
        assert!(pos("he", "llo") < pos("\u{2581}", "hello"));
    }

    fn bpe_vocab(pre: &str) -> GgufVocab {
        let table = super::super::byte_to_char_table();
        let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into()];
        let mut types = vec![3, 3];
        for c in table {
            tokens.push(c.to_string());
            types.push(1);
        }
        let merges = ["Ġ t", "h e", "Ġt he", "1 2"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
            types.push(1);
        }
        GgufVocab {
            model: "gpt2".into(),
            pre: Some(pre.into()),
            tokens,
            token_types: Some(types),
            merges: Some(merges.iter().map(|s| (*s).to_owned()).collect()),
            special_ids: HashMap::from([("bos", 1), ("eos", 0)]),
            ..Default::default()
        }
    }

    #[test]
    fn byte_level_bpe_uses_the_pre_tokenizer() {
        let tok = build(&bpe_vocab("smollm")).unwrap();
        assert!(!tok.add_bos());
        let the = tok.token_id("Ġthe").unwrap();
        let ids = tok.encode("<|im_start|> the 12", false).unwrap();
        // smollm isolates digits, so "12" is never merged.
        let want = vec![
            1,
            the,
            tok.token_id("Ġ").unwrap(),
            tok.token_id("1").unwrap(),
            tok.token_id("2").unwrap(),
        ];
        assert_eq!(ids, want);
        assert_eq!(tok.decode(&ids, true).unwrap(), " the 12");
        assert_eq!(tok.decode(&ids, false).unwrap(), "<|im_start|> the 12");
        // gpt-2's regex keeps digits together, so the merge applies.
        let gpt2 = build(&bpe_vocab("gpt-2")).unwrap();
        assert_eq!(
            gpt2.encode("12", false).unwrap(),
            vec![gpt2.token_id("12").unwrap()]
        );
        assert_eq!(tok.eos_ids(), &[0]);
    }

    #[test]
    fn bad_metadata_is_reported() {
        let mut v = bpe_vocab("smollm");
        v.merges = None;
        let e = build(&v).unwrap_err().to_string();
        assert!(e.contains("tokenizer.ggml.merges"), "{e}");
        let mut v = bpe_vocab("smollm");
        v.tokens[5] = v.tokens[4].clone();
        let e = build(&v).unwrap_err().to_string();
        assert!(e.contains("duplicate token"), "{e}");
        let mut v = bpe_vocab("smollm");
        v.model = "rwkv".into();
        let e = build(&v).unwrap_err().to_string();
        assert!(e.contains("not supported"), "{e}");
    }
}
