//! Tokenizers built from GGUF metadata ([`Tokenizer::from_gguf`]) or a Hugging Face
//! `tokenizer.json` ([`Tokenizer::from_hf_files`]), with the special-token facts generation
//! needs (BOS, end-of-generation ids).
//!
//! A GGUF tokenizer follows llama.cpp exactly: special tokens written in the text are split out
//! first (longest token text first, like `llama_tokenize(..., parse_special = true)`), then each
//! remaining piece of text goes through the BPE model; decoding concatenates each token's piece
//! the way `llama_token_to_piece` renders it (what llama.cpp's server streams). A Hugging Face
//! tokenizer follows the `tokenizers` library's own rules for both.

mod decode;
mod gguf;
mod pretokenizers;

use std::collections::HashMap;
use std::path::Path;

use tokenizers::Model;

pub use decode::IncrementalDecoder;

use crate::error::{Error, Result};

/// What a token is, as llama.cpp's token attributes say (`tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    /// Hidden when decoding with `skip_special` (llama.cpp: UNKNOWN | CONTROL).
    fn is_special(self) -> bool {
        matches!(self, TokenKind::Unknown | TokenKind::Control)
    }
}

/// A token split out of text before the BPE model runs.
#[derive(Debug, Clone)]
struct SpecialText {
    text: String,
    id: u32,
    /// Whitespace to the left of the token is dropped (llama.cpp LSTRIP).
    lstrip: bool,
    /// Whitespace to the right of the token is dropped (llama.cpp RSTRIP).
    rstrip: bool,
}

/// How raw text becomes ids.
#[derive(Debug, Clone)]
enum Encoder {
    /// llama.cpp byte-level BPE (`tokenizer.ggml.model = "gpt2"`).
    LlamaBpe { specials: Vec<SpecialText> },
    /// llama.cpp SentencePiece BPE (`tokenizer.ggml.model = "llama"`).
    LlamaSpm {
        specials: Vec<SpecialText>,
        add_space_prefix: bool,
    },
    /// A Hugging Face `tokenizer.json`, encoded by the `tokenizers` library as-is.
    Hf,
}

/// A tokenizer plus the facts about its special tokens that generation needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    encoder: Encoder,
    kinds: Vec<TokenKind>,
    /// The bytes each token renders to (llama.cpp `token_to_piece` with `special = true`).
    pieces: Vec<Vec<u8>>,
    /// Decode whole sequences through `inner` (decoders such as WordPiece that are not a
    /// concatenation of per-token pieces).
    decode_with_inner: bool,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    eog: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.kinds.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("eog", &self.eog)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &crate::gguf::GgufFile) -> Result<Tokenizer> {
        gguf::build(&gguf::GgufVocab::read(g)?)
    }

    /// Builds a tokenizer from a Hugging Face `tokenizer.json` and, when present, the parsed
    /// `tokenizer_config.json` (for `bos_token`, `eos_token` and `add_bos_token`).
    pub fn from_hf_files(
        tokenizer_json: &Path,
        tokenizer_config: Option<&serde_json::Value>,
    ) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_file(tokenizer_json).map_err(|e| {
            Error::Tokenizer(format!(
                "{}: not a usable tokenizer.json: {e}",
                tokenizer_json.display()
            ))
        })?;
        Self::from_hf_tokenizer(inner, tokenizer_config)
    }

    /// As [`Tokenizer::from_hf_files`], from an already loaded `tokenizers::Tokenizer`.
    pub fn from_hf_tokenizer(
        inner: tokenizers::Tokenizer,
        tokenizer_config: Option<&serde_json::Value>,
    ) -> Result<Tokenizer> {
        let n = inner.get_vocab_size(true);
        let added = inner.get_added_tokens_decoder();
        let mut kinds = vec![TokenKind::Normal; n];
        for (&id, tok) in &added {
            if let Some(k) = kinds.get_mut(id as usize) {
                *k = if tok.special {
                    TokenKind::Control
                } else {
                    TokenKind::UserDefined
                };
            }
        }
        let style = HfPieceStyle::detect(&inner);
        let mut pieces = Vec::with_capacity(n);
        for id in 0..n as u32 {
            let piece = match (added.get(&id), inner.id_to_token(id)) {
                (Some(tok), _) => tok.content.as_bytes().to_vec(),
                (None, Some(text)) => style.piece(&inner, id, &text),
                (None, None) => Vec::new(),
            };
            pieces.push(piece);
        }

        let config_token = |field: &str| -> Option<String> {
            let v = tokenizer_config?.get(field)?;
            match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
                _ => None,
            }
        };
        let bos = config_token("bos_token").and_then(|t| inner.token_to_id(&t));
        let eos = config_token("eos_token").and_then(|t| inner.token_to_id(&t));
        let add_bos = match tokenizer_config.and_then(|c| c.get("add_bos_token")) {
            Some(v) => v.as_bool().unwrap_or(false),
            // No explicit setting: the post-processor decides (Llama 3 adds BOS there).
            None => match (bos, inner.encode("", true)) {
                (Some(b), Ok(enc)) => enc.get_ids().first() == Some(&b),
                _ => false,
            },
        };
        let mut eog: Vec<u32> = eos.into_iter().collect();
        for (&id, tok) in &added {
            if EOG_TEXTS.contains(&tok.content.as_str()) && !eog.contains(&id) {
                eog.push(id);
            }
        }
        eog.sort_unstable();

        Ok(Tokenizer {
            inner,
            encoder: Encoder::Hf,
            kinds,
            pieces,
            decode_with_inner: style == HfPieceStyle::Inner,
            bos,
            eos,
            add_bos,
            eog,
        })
    }

    /// Token ids for `text`. Special tokens written in the text become their single ids (like
    /// llama.cpp with `parse_special = true`). `add_bos` prepends the BOS id when the vocabulary
    /// has one.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos {
            if let Some(b) = self.bos {
                out.push(b);
            }
        }
        match &self.encoder {
            Encoder::Hf => {
                let enc = self
                    .inner
                    .encode(text, false)
                    .map_err(|e| Error::Tokenizer(format!("encoding text: {e}")))?;
                out.extend_from_slice(enc.get_ids());
            }
            Encoder::LlamaBpe { specials } => {
                for frag in partition(text, specials) {
                    match frag {
                        Fragment::Token(id) => out.push(id),
                        Fragment::Text(t) => {
                            let enc = self
                                .inner
                                .encode(t, false)
                                .map_err(|e| Error::Tokenizer(format!("encoding text: {e}")))?;
                            out.extend_from_slice(enc.get_ids());
                        }
                    }
                }
            }
            Encoder::LlamaSpm {
                specials,
                add_space_prefix,
            } => {
                // llama.cpp prefixes a space to text at the start or right after a special token.
                let mut prev_special = true;
                for frag in partition(text, specials) {
                    match frag {
                        Fragment::Token(id) => {
                            out.push(id);
                            prev_special = true;
                        }
                        Fragment::Text(t) => {
                            let mut s = String::with_capacity(t.len() + 4);
                            if *add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(t);
                            let escaped = s.replace(' ', "\u{2581}");
                            let toks = self
                                .inner
                                .get_model()
                                .tokenize(&escaped)
                                .map_err(|e| Error::Tokenizer(format!("encoding text: {e}")))?;
                            out.extend(toks.iter().map(|t| t.id));
                            prev_special = false;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Text of `ids`: each token's piece, concatenated (what llama.cpp's server streams), with
    /// bytes that are not UTF-8 shown as U+FFFD. `skip_special` leaves out control tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if self.decode_with_inner {
            for &id in ids {
                self.piece_bytes(id, false)?; // range check
            }
            return self
                .inner
                .decode(ids, skip_special)
                .map_err(|e| Error::Tokenizer(format!("decoding ids: {e}")));
        }
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            bytes.extend_from_slice(self.piece_bytes(id, skip_special)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The bytes `id` renders to; empty for special tokens when `skip_special`.
    pub fn piece_bytes(&self, id: u32, skip_special: bool) -> Result<&[u8]> {
        let kind = self.kinds.get(id as usize).ok_or_else(|| {
            Error::Tokenizer(format!(
                "token id {id} is outside the vocabulary (size {})",
                self.kinds.len()
            ))
        })?;
        if skip_special && kind.is_special() {
            return Ok(&[]);
        }
        Ok(&self.pieces[id as usize])
    }

    /// The decoded text of one token, special tokens included (lossy when the token is part of
    /// a multi-byte character).
    pub fn token_piece(&self, id: u32) -> Option<String> {
        self.pieces
            .get(id as usize)
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }

    /// Number of token ids.
    pub fn vocab_size(&self) -> usize {
        self.kinds.len()
    }

    /// The beginning-of-sequence id, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence id, if the vocabulary has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether prompts get a BOS prepended by default (GGUF `tokenizer.ggml.add_bos_token`,
    /// else llama.cpp's default for the model type).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// Every id that ends generation (EOS, EOT, EOM and the end-of-turn tokens llama.cpp
    /// recognises by their text), sorted.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` ends generation.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// The id whose vocabulary text is exactly `text` (for byte-level vocabularies that is the
    /// byte-level spelling, `"Ġthe"`; special tokens are spelled as written, `"<|im_end|>"`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// The vocabulary text of `id` (see [`Tokenizer::token_id`]).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Whether `id` is a special (control or unknown) token, hidden by `skip_special`.
    pub fn is_special(&self, id: u32) -> bool {
        self.kinds.get(id as usize).is_some_and(|k| k.is_special())
    }

    /// The underlying `tokenizers` tokenizer (for callers that need its own pipeline, such as
    /// an embedding model's `[CLS] ... [SEP]` post-processing).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Token texts llama.cpp treats as end of generation wherever they appear in a vocabulary.
pub(crate) const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "[e~[",
];

/// A piece of text after special tokens were split out.
#[derive(Debug, PartialEq)]
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// C's `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// llama.cpp's `tokenizer_st_partition`: for each special token, longest text first, every
/// occurrence in the text fragments left so far becomes that token.
fn partition<'a>(text: &'a str, specials: &[SpecialText]) -> Vec<Fragment<'a>> {
    let mut frags = if text.is_empty() {
        Vec::new()
    } else {
        vec![Fragment::Text(text)]
    };
    for sp in specials {
        if !frags
            .iter()
            .any(|f| matches!(f, Fragment::Text(t) if t.contains(sp.text.as_str())))
        {
            continue;
        }
        let mut next = Vec::with_capacity(frags.len() + 2);
        for frag in frags {
            let Fragment::Text(mut rest) = frag else {
                next.push(frag);
                continue;
            };
            while let Some(pos) = rest.find(sp.text.as_str()) {
                let mut left = &rest[..pos];
                if sp.lstrip {
                    left = left.trim_end_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
                }
                if !left.is_empty() {
                    next.push(Fragment::Text(left));
                }
                next.push(Fragment::Token(sp.id));
                rest = &rest[pos + sp.text.len()..];
                if sp.rstrip {
                    rest = rest.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
                }
            }
            if !rest.is_empty() {
                next.push(Fragment::Text(rest));
            }
        }
        frags = next;
    }
    frags
}

/// How a Hugging Face tokenizer's model tokens render as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HfPieceStyle {
    /// GPT-2 byte-level: each character stands for one byte.
    ByteLevel,
    /// SentencePiece: `▁` is a space, `<0xAB>` is a byte.
    SentencePiece,
    /// Anything else: ask the decoder.
    Inner,
}

impl HfPieceStyle {
    fn detect(inner: &tokenizers::Tokenizer) -> HfPieceStyle {
        let Some(dec) = inner.get_decoder() else {
            return HfPieceStyle::Inner;
        };
        let json = serde_json::to_value(dec).unwrap_or_default();
        let mut types = Vec::new();
        collect_types(&json, &mut types);
        if types.iter().any(|t| t == "ByteLevel") {
            HfPieceStyle::ByteLevel
        } else if types
            .iter()
            .any(|t| t == "Metaspace" || t == "ByteFallback" || t == "Replace")
        {
            HfPieceStyle::SentencePiece
        } else {
            HfPieceStyle::Inner
        }
    }

    fn piece(self, inner: &tokenizers::Tokenizer, id: u32, text: &str) -> Vec<u8> {
        match self {
            HfPieceStyle::ByteLevel => byte_level_decode(text),
            HfPieceStyle::SentencePiece => spm_byte_token(text)
                .map_or_else(|| text.replace('\u{2581}', " ").into(), |b| vec![b]),
            HfPieceStyle::Inner => inner
                .decode(&[id], false)
                .map(String::into_bytes)
                .unwrap_or_default(),
        }
    }
}

fn collect_types(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(o) => {
            if let Some(t) = o.get("type").and_then(|t| t.as_str()) {
                out.push(t.to_owned());
            }
            for x in o.values() {
                collect_types(x, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_types(x, out)),
        _ => {}
    }
}

/// `<0xAB>` -> 0xAB.
pub(crate) fn spm_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// GPT-2's byte <-> printable character table: bytes that are printable stand for themselves,
/// the rest map to U+0100 upwards in byte order.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff);
        table[b as usize] = if printable {
            b as char
        } else {
            let c = char::from_u32(256 + n).expect("valid char");
            n += 1;
            c
        };
    }
    table
}

fn char_to_byte_map() -> &'static HashMap<char, u8> {
    static MAP: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    MAP.get_or_init(|| {
        byte_to_char_table()
            .iter()
            .enumerate()
            .map(|(b, &c)| (c, b as u8))
            .collect()
    })
}

/// The bytes a byte-level token text stands for. Characters outside the table are written the
/// way llama.cpp writes them (`[UNK_BYTE_0x..]`).
pub(crate) fn byte_level_decode(text: &str) -> Vec<u8> {
    let map = char_to_byte_map();
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match map.get(&c) {
            Some(&b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(text: &str, id: u32) -> SpecialText {
        SpecialText {
            text: text.into(),
            id,
            lstrip: false,
            rstrip: false,
        }
    }

    #[test]
    fn partition_splits_longest_first() {
        let specials = [sp("<|im_start|>", 1), sp("<|im", 7), sp("<s>", 2)];
        assert_eq!(
            partition("a<|im_start|>b<|im<s>", &specials),
            [
                Fragment::Text("a"),
                Fragment::Token(1),
                Fragment::Text("b"),
                Fragment::Token(7),
                Fragment::Token(2),
            ]
        );
        assert!(partition("", &specials).is_empty());
        assert_eq!(partition("plain", &specials), [Fragment::Text("plain")]);
    }

    #[test]
    fn partition_strips_whitespace_when_asked() {
        let mut t = sp("<|end|>", 5);
        t.rstrip = true;
        t.lstrip = true;
        assert_eq!(
            partition("x \n<|end|>\n y", &[t]),
            [Fragment::Text("x"), Fragment::Token(5), Fragment::Text("y")]
        );
    }

    #[test]
    fn byte_table_round_trips() {
        let table = byte_to_char_table();
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'a' as usize], 'a');
        let all: String = table.iter().collect();
        assert_eq!(byte_level_decode(&all), (0..=255u8).collect::<Vec<_>>());
    }

    #[test]
    fn spm_byte_tokens_parse() {
        assert_eq!(spm_byte_token("<0x0A>"), Some(10));
        assert_eq!(spm_byte_token("<0xff>"), Some(255));
        assert_eq!(spm_byte_token("<0x1>"), None);
        assert_eq!(spm_byte_token("0x0A"), None);
    }
}
