//! llama.cpp pre-tokenizer names (`tokenizer.ggml.pre`) to the regexes that split text before
//! byte-level BPE, and the per-name flags llama.cpp sets alongside (`ignore_merges`, BOS default).
//!
//! llama.cpp applies its regex list in order: each regex splits every piece left by the one
//! before, and text a regex does not match stays a piece of its own. That is a tokenizers
//! `Sequence` of `Split(regex, Isolated)`, followed by `ByteLevel` without its own regex.
//! Where llama.cpp spells a regex in an adapted form for its engine (case-insensitive
//! contractions as `'[sS]`, letter classes via lookaheads), the original form from the model's
//! `tokenizer.json` is used here; both match the same text.

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use crate::error::{Error, Result};

/// GPT-2's regex.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama 3's regex (also DBRX, Smaug, ChatGLM4).
const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's regex (also StableLM2): Llama 3's with single digits.
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-4o's (o200k) regex.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Mistral's Tekken regex.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek LLM's letter class (cased letters), written as code points because several of
/// them have canonical equivalents that text tools silently substitute.
const DEEPSEEK_LETTERS: &str = concat!(
    r"\s?[",
    r"A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}",
    r"\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}",
    r"\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}",
    r"\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}",
    r"\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}",
    r"\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}",
    r"\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}",
    r"\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}",
    r"\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}",
    r"\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}",
    r"\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}",
    r"\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}",
    r"\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}",
    r"\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}",
    r"\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}",
    r"\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}",
    r"\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}",
    r"\x{1E900}-\x{1E943}",
    "]+"
);

/// How llama.cpp pre-tokenizes for one `tokenizer.ggml.pre` name.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PreSpec {
    /// The name this spec was resolved for (after falling back to `default`).
    pub name: String,
    /// Regexes applied in order, each to every piece the previous ones left.
    pub regexes: &'static [&'static str],
    /// Whole pre-tokenized words found in the vocabulary skip BPE merges (Llama 3, Tekken).
    pub ignore_merges: bool,
    /// BOS is added by default (before `tokenizer.ggml.add_bos_token` overrides it).
    pub add_bos: bool,
}

/// llama.cpp's regex list and flags for `name`; `None` for names it does not know.
pub(super) fn spec_for(name: &str) -> Option<PreSpec> {
    let (regexes, ignore_merges, add_bos): (&'static [&'static str], bool, bool) = match name {
        "default" => (
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            false,
            false,
        ),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => (&[LLAMA3], true, true),
        "dbrx" | "smaug-bpe" => (&[LLAMA3], false, false),
        "deepseek-llm" => (
            &[
                r"[\r\n]",
                DEEPSEEK_LETTERS,
                r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
                r"\s+$",
                r"[一-龥ࠀ-一가-퟿]+",
                r"\p{N}+",
            ],
            false,
            false,
        ),
        "deepseek-coder" => (
            &[
                r"[\r\n]",
                r"\s?\p{L}+",
                r"\s?\p{P}+",
                r"[一-龥ࠀ-一가-퟿]+",
                r"\p{N}",
            ],
            false,
            false,
        ),
        "deepseek-v3" => (
            &[
                r"\p{N}{1,3}",
                r"[一-龥぀-ゟ゠-ヿ]+",
                r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##,
            ],
            false,
            false,
        ),
        "falcon" => (
            &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"],
            false,
            false,
        ),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b" => {
            (&[r"\p{N}", GPT2], false, false)
        }
        "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "jina-es" | "jina-de" | "gigachat"
        | "jina-v2-es" | "jina-v2-de" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe"
        | "exaone4" | "trillion" | "granite-docling" => (&[GPT2], false, false),
        "stablelm2" | "qwen2" | "deepseek-r1-qwen" | "megrez" | "hunyuan" => {
            (&[QWEN2], false, false)
        }
        "poro-chat" | "bloom" | "gpt3-finnish" => (&[r" ?[^(\s|.,!?…。，、।۔،)]+"], false, false),
        "chatglm-bpe" | "glm4" => (&[LLAMA3], false, false),
        "viking" => (&[r" ?[^(\s|.,!?…。，、।۔،)]+", r"\p{N}"], false, false),
        "tekken" => (&[TEKKEN], true, true),
        "chameleon" => (
            &[
                r"<sentinel:[0-9]+>",
                r"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
                r"([\t\n]|    |  )",
                r"\p{N}",
                r"[\p{P}!-/:-@\[-`{-~]",
                GPT2,
            ],
            false,
            true,
        ),
        "gpt-4o" | "llama4" => (&[GPT4O], false, false),
        "seed-coder" => (
            &[
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",
            ],
            false,
            false,
        ),
        "bailingmoe" | "llada-moe" => (
            &[
                r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
            ],
            false,
            false,
        ),
        "superbpe" => (&[r"\p{N}+", r"(?=(\d{3})+(?!\d))"], false, false),
        _ => return None,
    };
    Some(PreSpec {
        name: name.to_owned(),
        regexes,
        ignore_merges,
        add_bos,
    })
}

/// The spec for `name`, falling back to llama.cpp's `default` with a warning when the name is
/// unknown or missing.
pub(super) fn spec_or_default(name: Option<&str>) -> PreSpec {
    match name {
        Some(n) => spec_for(n).unwrap_or_else(|| {
            tracing::warn!(
                pre = n,
                "unknown tokenizer.ggml.pre {n:?}; using the default pre-tokenizer, so \
                 tokenization may differ from the model's own (convert the model with a newer \
                 llama.cpp or report the name)"
            );
            spec_for("default").expect("default spec exists")
        }),
        None => {
            tracing::warn!(
                "GGUF has no tokenizer.ggml.pre; using the default pre-tokenizer, so \
                 tokenization may differ from the model's own"
            );
            spec_for("default").expect("default spec exists")
        }
    }
}

/// The tokenizers pre-tokenizer for `spec`: each regex as an isolating split, then byte-level
/// mapping without GPT-2's own regex.
pub(super) fn build(spec: &PreSpec) -> Result<PreTokenizerWrapper> {
    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(spec.regexes.len() + 1);
    for re in spec.regexes {
        let split = Split::new(
            SplitPattern::Regex((*re).to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| {
            Error::Tokenizer(format!(
                "pre-tokenizer {:?}: regex {re:?} does not compile: {e}",
                spec.name
            ))
        })?;
        steps.push(split.into());
    }
    steps.push(ByteLevel::new(false, false, false).into());
    Ok(Sequence::new(steps).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    /// The pieces `name`'s regexes cut `text` into (before byte-level mapping).
    fn pieces(name: &str, text: &str) -> Vec<String> {
        let spec = spec_for(name).unwrap();
        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        for re in spec.regexes {
            steps.push(
                Split::new(
                    SplitPattern::Regex((*re).to_owned()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap()
                .into(),
            );
        }
        let pt = Sequence::new(steps);
        let mut s = PreTokenizedString::from(text);
        pt.pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(p, _, _)| p.to_owned())
            .collect()
    }

    #[test]
    fn every_listed_name_compiles() {
        let names = [
            "default",
            "llama-bpe",
            "dbrx",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "falcon",
            "starcoder",
            "refact",
            "smollm",
            "gpt-2",
            "phi-2",
            "mpt",
            "olmo",
            "qwen2",
            "stablelm2",
            "poro-chat",
            "chatglm-bpe",
            "viking",
            "tekken",
            "chameleon",
            "gpt-4o",
            "seed-coder",
            "bailingmoe",
            "superbpe",
        ];
        for n in names {
            let spec = spec_for(n).unwrap_or_else(|| panic!("{n} missing"));
            build(&spec).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
    }

    #[test]
    fn smollm_isolates_digits_then_applies_gpt2() {
        assert_eq!(
            pieces("smollm", "In 2024,  we're  here\n"),
            ["In", " ", "2", "0", "2", "4", ",", " ", " we", "'re", " ", " here", "\n"]
        );
    }

    #[test]
    fn gpt2_splits_whitespace_runs_like_llama_cpp() {
        assert_eq!(
            pieces("gpt-2", "a  b\n\nc   "),
            ["a", " ", " b", "\n", "\n", "c", "   "]
        );
    }

    #[test]
    fn llama3_groups_three_digits_and_keeps_newlines_with_spaces() {
        assert_eq!(
            pieces("llama-bpe", "12345 I'M\n\n  x"),
            ["123", "45", " I", "'M", "\n\n", " ", " x"]
        );
    }

    #[test]
    fn qwen2_splits_single_digits() {
        assert_eq!(pieces("qwen2", "v12"), ["v", "1", "2"]);
    }

    #[test]
    fn unknown_name_falls_back_to_default() {
        assert_eq!(spec_for("no-such-pre"), None);
        assert_eq!(spec_or_default(Some("no-such-pre")).name, "default");
        assert_eq!(spec_or_default(None).name, "default");
        let llama3 = spec_for("llama-bpe").unwrap();
        assert!(llama3.ignore_merges && llama3.add_bos);
    }
}
