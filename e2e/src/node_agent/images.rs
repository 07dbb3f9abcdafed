//! Container images, mapped to binaries built on this machine.
//!
//! There is no container runtime here, so "pulling" an image means finding it in a table the
//! test provides: `ryzanstein/server:*` → `target/release/ryzanstein`. The binary is the image's
//! entrypoint; a container's `command`, when set, must name it (its file name, as in
//! `/usr/local/bin/ryzanstein`), and `args` follow as usual. An image the table does not know
//! cannot be pulled: the container waits with `ErrImagePull`, then `ImagePullBackOff`, as with a
//! kubelet whose registry does not have the image.

use std::path::{Path, PathBuf};

/// Image patterns and the binaries they map to; the first match wins.
#[derive(Clone, Debug, Default)]
pub struct ImageTable {
    entries: Vec<(String, PathBuf)>,
}

impl ImageTable {
    pub fn new() -> ImageTable {
        ImageTable::default()
    }

    /// Map `pattern` to `binary`. Patterns: `repo/name` or `repo/name:*` (any tag or digest),
    /// `repo/name:tag` (that tag only). An image whose first component is a registry host
    /// (it contains a `.` or a `:`, or is `localhost`) also matches without it.
    pub fn with(mut self, pattern: &str, binary: impl Into<PathBuf>) -> ImageTable {
        self.entries.push((pattern.to_owned(), binary.into()));
        self
    }

    /// The binary for `image`, or why it cannot be "pulled".
    pub fn resolve(&self, image: &str) -> Result<&Path, String> {
        let (repository, tag) = split_reference(image);
        let short = strip_registry(repository);
        for (pattern, binary) in &self.entries {
            let (p_repo, p_tag) = match pattern.strip_suffix(":*") {
                Some(repo) => (repo, None),
                None => {
                    let (repo, tag) = split_reference(pattern);
                    (repo, tag)
                }
            };
            let repo_matches = p_repo == repository || p_repo == short;
            let tag_matches = p_tag.is_none_or(|t| Some(t) == tag);
            if repo_matches && tag_matches {
                return Ok(binary);
            }
        }
        let known: Vec<&str> = self.entries.iter().map(|(p, _)| p.as_str()).collect();
        Err(format!(
            "failed to pull image \"{image}\": the e2e node agent's image table has no entry for it (known: {})",
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        ))
    }
}

/// `repo[:tag][@digest]` → (repo, tag or digest).
fn split_reference(image: &str) -> (&str, Option<&str>) {
    if let Some((repo, digest)) = image.split_once('@') {
        let (repo, _tag) = split_tag(repo);
        return (repo, Some(digest));
    }
    split_tag(image)
}

fn split_tag(image: &str) -> (&str, Option<&str>) {
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => {
            (&image[..colon], Some(&image[colon + 1..]))
        }
        _ => (image, None),
    }
}

fn strip_registry(repository: &str) -> &str {
    match repository.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => repository,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ImageTable {
        ImageTable::new()
            .with("ryzanstein/server:*", "/bin/server")
            .with("ryzanstein/operator", "/bin/operator")
            .with("ryzanstein/e2e-echo:v1", "/bin/echo-v1")
    }

    #[test]
    fn any_tag_or_digest_matches_a_wildcard() {
        let t = table();
        for image in [
            "ryzanstein/server",
            "ryzanstein/server:0.1.0",
            "ryzanstein/server@sha256:abcd",
            "ryzanstein/server:0.1.0@sha256:abcd",
            "registry.example:5000/ryzanstein/server:dev",
            "localhost/ryzanstein/server:dev",
        ] {
            assert_eq!(t.resolve(image), Ok(Path::new("/bin/server")), "{image}");
        }
        assert_eq!(
            t.resolve("ryzanstein/operator:0.1.0"),
            Ok(Path::new("/bin/operator"))
        );
    }

    #[test]
    fn a_tagged_pattern_matches_that_tag_only() {
        let t = table();
        assert_eq!(
            t.resolve("ryzanstein/e2e-echo:v1"),
            Ok(Path::new("/bin/echo-v1"))
        );
        assert!(t.resolve("ryzanstein/e2e-echo:v2").is_err());
        assert!(t.resolve("ryzanstein/e2e-echo").is_err());
    }

    #[test]
    fn unknown_images_say_what_is_known() {
        let err = table().resolve("nginx:1.27").unwrap_err();
        assert!(err.contains("\"nginx:1.27\""), "{err}");
        assert!(err.contains("ryzanstein/server:*"), "{err}");
        assert!(table().resolve("other/ryzanstein/server:1").is_err());
    }
}
