//! From a model source spec to a running [`Engine`]: resolve the files, build the tokenizer,
//! the chat template and the model.

use std::path::Path;

use super::{Engine, EngineOptions};
use crate::chat_template::ChatTemplate;
use crate::gguf::GgufFile;
use crate::models::{self, CausalLm};
use crate::safetensors_dir::HfDir;
use crate::source::{self, ModelFiles};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Resolves `spec` (a local path, `hf://org/repo[@rev]`, `https://...` or `bundled://NAME`;
/// blocking, may download; checked against `opts.model_sha256`), loads the model and starts the
/// engine.
pub fn load(spec: &str, opts: &EngineOptions) -> Result<Engine> {
    let files = source::resolve_pinned(spec, &source::cache_root(), opts.model_sha256.as_ref())?;
    let (tokenizer, template, model) = match &files {
        ModelFiles::Gguf(path) => {
            let g = GgufFile::open(path)?;
            let tok = Tokenizer::from_gguf(&g)?;
            let template = ChatTemplate::from_gguf(&g, &tok)?;
            (
                tok,
                template,
                models::load_gguf_with(&g, opts.threads, &opts.model)?,
            )
        }
        ModelFiles::HfDir(dir) => {
            let hf = HfDir::open(dir)?;
            let tok_json = hf.tokenizer_json().ok_or_else(|| {
                Error::model_file(
                    dir,
                    "no tokenizer.json in the model directory; add the model's tokenizer.json",
                )
            })?;
            let tok_cfg = hf.tokenizer_config()?;
            let tok = Tokenizer::from_hf_files(&tok_json, tok_cfg.as_ref())?;
            let template = match &tok_cfg {
                Some(cfg) => ChatTemplate::from_tokenizer_config(cfg)?,
                None => None,
            };
            let model: Box<dyn CausalLm> =
                Box::new(models::hf_llama::load(&hf, opts.threads, &opts.model)?);
            (tok, template, model)
        }
    };
    if template.is_none() {
        tracing::warn!(
            spec,
            "the model has no chat template; /v1/chat/completions will refuse"
        );
    }
    tracing::info!(
        spec,
        architecture = model.architecture(),
        vocab = model.vocab_size(),
        context = model.context_length(),
        threads = opts.threads,
        "model loaded"
    );
    Engine::start(model, tokenizer, template, opts)
}

/// The name a model is served under when none is given: the bundled name for `bundled://`,
/// the repository name for `hf://org/repo[@rev]`, the last path segment of an `https://` URL
/// (without `.gguf`), else the file stem (or directory name).
pub fn default_served_name(spec: &str) -> String {
    if spec.starts_with("https://") {
        if let Ok(s) = source::https::HttpsSpec::parse(spec) {
            return s.default_name();
        }
    }
    if let Some(name) = spec.strip_prefix("bundled://") {
        return name.trim_matches('/').to_owned();
    }
    if let Some(repo) = spec.strip_prefix("hf://") {
        let repo = repo.split('@').next().unwrap_or(repo).trim_end_matches('/');
        return repo.rsplit('/').next().unwrap_or(repo).to_owned();
    }
    let path = Path::new(spec);
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| spec.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_names_follow_the_source() {
        assert_eq!(
            default_served_name("bundled://smollm2-135m-instruct"),
            "smollm2-135m-instruct"
        );
        assert_eq!(
            default_served_name("hf://HuggingFaceTB/SmolLM2-135M-Instruct@main"),
            "SmolLM2-135M-Instruct"
        );
        assert_eq!(default_served_name("hf://org/repo"), "repo");
        assert_eq!(
            default_served_name("/models/SmolLM2-135M-Instruct.Q4_1.gguf"),
            "SmolLM2-135M-Instruct.Q4_1"
        );
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("my-model.v2");
        std::fs::create_dir(&sub).unwrap();
        assert_eq!(default_served_name(sub.to_str().unwrap()), "my-model.v2");
    }
}
