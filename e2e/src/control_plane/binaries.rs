//! Where the control-plane binaries are, and which versions they must report: the versions
//! pinned in `e2e/k8s/{kubernetes,etcd}/go.mod`, read at compile time.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

const KUBERNETES_GO_MOD: &str = include_str!("../../k8s/kubernetes/go.mod");
const ETCD_GO_MOD: &str = include_str!("../../k8s/etcd/go.mod");

/// Where the binaries are and which versions they must report.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub dir: PathBuf,
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
}

impl Binaries {
    /// The Kubernetes release pinned in `e2e/k8s/kubernetes/go.mod`, e.g. `v1.35.4`.
    pub fn kubernetes_version() -> &'static str {
        pinned_version(KUBERNETES_GO_MOD, "k8s.io/kubernetes")
    }

    /// The etcd release pinned in `e2e/k8s/etcd/go.mod`, e.g. `v3.6.16`.
    pub fn etcd_version() -> &'static str {
        pinned_version(ETCD_GO_MOD, "go.etcd.io/etcd/server/v3")
    }

    /// `$RYZANSTEIN_K8S_BIN_DIR`, else `<cache>/k8s/<version>/bin` where `<cache>` is
    /// `$RYZANSTEIN_CACHE` or `~/.cache/ryzanstein` — where `scripts/k8s-build.sh` puts them.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("RYZANSTEIN_K8S_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let cache = std::env::var_os("RYZANSTEIN_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/ryzanstein")
            });
        cache
            .join("k8s")
            .join(Self::kubernetes_version())
            .join("bin")
    }

    /// The binaries in [`Binaries::default_dir`], checked to exist and report the pinned versions.
    pub fn locate() -> Result<Binaries> {
        Self::locate_in(&Self::default_dir())
    }

    /// The binaries in `dir`, checked to exist and report the pinned versions.
    pub fn locate_in(dir: &Path) -> Result<Binaries> {
        let bins = Binaries {
            dir: dir.to_path_buf(),
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            kube_controller_manager: dir.join("kube-controller-manager"),
            kube_scheduler: dir.join("kube-scheduler"),
        };
        let not_built = |reason: String| Error::NotBuilt {
            dir: dir.to_path_buf(),
            reason,
        };
        let expect_k8s = format!("Kubernetes {}", Self::kubernetes_version());
        let expect_etcd = format!(
            "etcd Version: {}",
            Self::etcd_version().trim_start_matches('v')
        );
        for (bin, expected) in [
            (&bins.etcd, &expect_etcd),
            (&bins.kube_apiserver, &expect_k8s),
            (&bins.kube_controller_manager, &expect_k8s),
            (&bins.kube_scheduler, &expect_k8s),
        ] {
            if !bin.is_file() {
                return Err(not_built(format!("{} is missing", bin.display())));
            }
            let out = Command::new(bin)
                .arg("--version")
                .output()
                .map_err(|e| not_built(format!("{} does not run: {e}", bin.display())))?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !text.lines().any(|l| l.trim() == expected.as_str()) {
                let first = text.lines().next().unwrap_or("").trim().to_string();
                return Err(not_built(format!(
                    "{} reports '{first}', expected '{expected}'",
                    bin.display()
                )));
            }
        }
        Ok(bins)
    }
}

/// The version a go.mod pins for `module`, in a `require` line or block.
fn pinned_version(go_mod: &'static str, module: &str) -> &'static str {
    go_mod
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            let mut first = words.next()?;
            if first == "require" {
                first = words.next()?;
            }
            let version = words.next()?;
            (first == module && version.starts_with('v')).then_some(version)
        })
        .unwrap_or_else(|| panic!("e2e/k8s go.mod pins no version of {module}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_go_mod_files() {
        let k8s = Binaries::kubernetes_version();
        assert!(k8s.starts_with("v1."), "{k8s}");
        let etcd = Binaries::etcd_version();
        assert!(etcd.starts_with("v3."), "{etcd}");
    }

    #[test]
    fn pinned_version_reads_require_lines_and_blocks() {
        let go_mod = "module x\n\nrequire k8s.io/kubernetes v1.2.3\n";
        assert_eq!(pinned_version(go_mod, "k8s.io/kubernetes"), "v1.2.3");
        let go_mod = "module x\nreplace k8s.io/api => k8s.io/api v0.2.3\nrequire (\n\tk8s.io/api v0.2.3 // indirect\n)\n";
        assert_eq!(pinned_version(go_mod, "k8s.io/api"), "v0.2.3");
    }

    #[test]
    fn a_missing_build_says_how_to_build() {
        let dir = tempfile::tempdir().unwrap();
        let err = Binaries::locate_in(dir.path()).unwrap_err();
        assert!(matches!(err, Error::NotBuilt { .. }));
        assert!(err.to_string().contains("make k8s"), "{err}");
    }
}
