//! `spec.model.source` as the server's `--model` argument.
//!
//! - `bundled://name`: passed as is.
//! - `hf://org/repo[@revision][/path/file.gguf]`: the server spells a file inside the repository
//!   with `#` (`hf://org/repo@revision#path/file.gguf`), so the first `/` after the repository
//!   (and revision) becomes `#`.
//! - `pvc://claim[/path]`: the claim (in the deployment's namespace) is mounted read-only at
//!   [`MODEL_MOUNT_PATH`] and the server gets the local path.
//! - `https://...`: passed as is.

/// Where a `pvc://` claim is mounted in the server container.
pub const MODEL_MOUNT_PATH: &str = "/var/lib/ryzanstein/model";

/// The server's view of a model source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSource {
    /// The `--model` argument.
    pub model_arg: String,
    /// The PersistentVolumeClaim to mount read-only at [`MODEL_MOUNT_PATH`], for `pvc://`.
    pub claim: Option<String>,
}

/// Translates a ModelDeployment's `model.source` (already validated by the CRD's rules).
pub fn server_source(source: &str) -> ServerSource {
    if let Some(rest) = source.strip_prefix("pvc://") {
        let (claim, path) = rest.split_once('/').unwrap_or((rest, ""));
        let path = path.trim_matches('/');
        let model_arg = if path.is_empty() {
            MODEL_MOUNT_PATH.to_owned()
        } else {
            format!("{MODEL_MOUNT_PATH}/{path}")
        };
        return ServerSource {
            model_arg,
            claim: Some(claim.to_owned()),
        };
    }
    if let Some(body) = source.strip_prefix("hf://") {
        return ServerSource {
            model_arg: format!("hf://{}", hf_body(body)),
            claim: None,
        };
    }
    ServerSource {
        model_arg: source.to_owned(),
        claim: None,
    }
}

/// `org/repo[@rev][/file]` → `org/repo[@rev][#file]`.
fn hf_body(body: &str) -> String {
    let Some((org, rest)) = body.split_once('/') else {
        return body.to_owned();
    };
    // The repository (and revision) end at the next '/'; a revision never holds one here.
    match rest.split_once('/') {
        Some((repo, file)) if !file.is_empty() => format!("{org}/{repo}#{file}"),
        Some((repo, _)) => format!("{org}/{repo}"),
        None => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(s: &str) -> String {
        server_source(s).model_arg
    }

    #[test]
    fn bundled_and_https_pass_through() {
        assert_eq!(
            server_source("bundled://smollm2-135m-instruct"),
            ServerSource {
                model_arg: "bundled://smollm2-135m-instruct".into(),
                claim: None
            }
        );
        assert_eq!(
            arg("https://example.com/m.gguf"),
            "https://example.com/m.gguf"
        );
    }

    #[test]
    fn hf_files_use_the_servers_hash_form() {
        assert_eq!(arg("hf://org/repo"), "hf://org/repo");
        assert_eq!(arg("hf://org/repo@v1.0"), "hf://org/repo@v1.0");
        assert_eq!(
            arg("hf://org/repo/sub/m.Q4_0.gguf"),
            "hf://org/repo#sub/m.Q4_0.gguf"
        );
        assert_eq!(
            arg("hf://org/repo@main/m.gguf"),
            "hf://org/repo@main#m.gguf"
        );
        assert_eq!(arg("hf://org/repo/"), "hf://org/repo");
    }

    #[test]
    fn pvc_sources_mount_the_claim() {
        assert_eq!(
            server_source("pvc://models/llama/8b.gguf"),
            ServerSource {
                model_arg: "/var/lib/ryzanstein/model/llama/8b.gguf".into(),
                claim: Some("models".into())
            }
        );
        assert_eq!(
            server_source("pvc://models"),
            ServerSource {
                model_arg: "/var/lib/ryzanstein/model".into(),
                claim: Some("models".into())
            }
        );
    }
}
