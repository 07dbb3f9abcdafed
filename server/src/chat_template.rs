//! Chat templates (Jinja, as in Hugging Face `tokenizer_config.json` or GGUF
//! `tokenizer.chat_template`) rendered with minijinja the way transformers renders them.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A compiled chat template.
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported with its line.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate> {
        Ok(ChatTemplate {
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// The template in `tokenizer.chat_template`, if the file has one.
    pub fn from_gguf(g: &crate::gguf::GgufFile, tok: &Tokenizer) -> Result<Option<ChatTemplate>> {
        let _ = (g, tok);
        Err(Error::ChatTemplate("from_gguf: being written".into()))
    }

    /// The template in a `tokenizer_config.json`'s `chat_template` field (a string, or a list of
    /// `{name, template}` where the one named `default` is used).
    pub fn from_tokenizer_config(cfg: &serde_json::Value) -> Result<Option<ChatTemplate>> {
        let _ = cfg;
        Err(Error::ChatTemplate("from_tokenizer_config: being written".into()))
    }

    /// Renders `messages`; `add_generation_prompt` appends the assistant turn's opening.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let _ = (messages, add_generation_prompt, &self.source, &self.bos_token, &self.eos_token);
        Err(Error::ChatTemplate("render: being written".into()))
    }
}
