//! Mount paths, rewritten: the one place the node agent deviates from a kubelet.
//!
//! A kubelet bind-mounts each volume at its `mountPath` inside the container's own filesystem.
//! Without a container runtime there is no container filesystem: the agent's containers are
//! plain processes on this machine's filesystem, where `/etc/ryzanstein` or
//! `/var/run/secrets/kubernetes.io/serviceaccount` cannot be made per pod (a private mount
//! namespace per process would still need those mount points created on the shared filesystem,
//! and the programs' own files — binaries, libraries — live there too). So
//! every occurrence of a mount path in a container's `command`, `args`, `env` values and
//! `workingDir` is replaced by the pod's directory for that volume: `--config=/etc/ryzanstein/x`
//! becomes `--config=<state>/pods/<uid>/volumes/config/x`. A path only counts where it stands
//! alone: at the start or after a character that cannot be part of a path name (`=`, `:`, `,`,
//! a space, a quote, ...), and followed by the end, `/` or such a character; `/tmpfoo` is not
//! `/tmp`. The longest mount path wins (`/a/b` before `/a`). Paths a program has compiled in, or
//! reads from files, are not rewritten.

use std::path::{Path, PathBuf};

/// Container paths and the host directories that stand for them in one container.
#[derive(Clone, Debug, Default)]
pub struct PathMap {
    /// (container path without trailing `/`, host path), longest container path first.
    entries: Vec<(String, PathBuf)>,
}

impl PathMap {
    /// Map `container_path` to `host_path`. The root (`/`) and relative paths are ignored: a
    /// kubelet refuses relative mount paths, and rewriting every absolute path is no mapping.
    pub fn insert(&mut self, container_path: &str, host_path: &Path) {
        let path = container_path.trim_end_matches('/');
        if path.is_empty() || !path.starts_with('/') {
            return;
        }
        self.entries.retain(|(p, _)| p != path);
        self.entries
            .push((path.to_owned(), host_path.to_path_buf()));
        self.entries
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    }

    /// The host path standing for `container_path`, when it lies under a mount.
    pub fn host_path(&self, container_path: &str) -> Option<PathBuf> {
        self.entries.iter().find_map(|(path, host)| {
            let rest = container_path.strip_prefix(path.as_str())?;
            if rest.is_empty() {
                Some(host.clone())
            } else {
                rest.strip_prefix('/').map(|r| host.join(r))
            }
        })
    }

    /// `text` with every mount path replaced by its host path.
    pub fn rewrite(&self, text: &str) -> String {
        if self.entries.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        let mut copied = 0;
        while i < text.len() {
            let at_boundary = i == 0 || !is_path_char(text[..i].chars().next_back().unwrap_or(' '));
            let matched = at_boundary
                .then(|| {
                    self.entries.iter().find(|(path, _)| {
                        text[i..].starts_with(path.as_str())
                            && text[i + path.len()..]
                                .chars()
                                .next()
                                .is_none_or(|c| c == '/' || !is_path_char(c))
                    })
                })
                .flatten();
            match matched {
                Some((path, host)) => {
                    out.push_str(&text[copied..i]);
                    out.push_str(&host.to_string_lossy());
                    i += path.len();
                    copied = i;
                }
                None => i += text[i..].chars().next().map_or(1, char::len_utf8),
            }
        }
        out.push_str(&text[copied..]);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Characters that may continue a path name (so a mount path next to one is not a match).
fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | '~' | '+' | '@')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> PathMap {
        let mut m = PathMap::default();
        m.insert("/tmp", Path::new("/state/pods/u/volumes/tmp"));
        m.insert(
            "/etc/ryzanstein/",
            Path::new("/state/pods/u/volumes/config"),
        );
        m.insert(
            "/var/run/secrets/kubernetes.io/serviceaccount",
            Path::new("/state/pods/u/volumes/kube-api-access"),
        );
        m.insert("/var/run", Path::new("/state/pods/u/volumes/run"));
        m
    }

    #[test]
    fn flags_values_and_bare_paths_are_rewritten() {
        let m = map();
        assert_eq!(
            m.rewrite("--config=/etc/ryzanstein/operator.yaml"),
            "--config=/state/pods/u/volumes/config/operator.yaml"
        );
        assert_eq!(m.rewrite("/tmp"), "/state/pods/u/volumes/tmp");
        assert_eq!(
            m.rewrite("/etc/ryzanstein/a.yaml,/tmp/b"),
            "/state/pods/u/volumes/config/a.yaml,/state/pods/u/volumes/tmp/b"
        );
        assert_eq!(
            m.rewrite("cat \"/tmp/x\" >/tmp/y"),
            "cat \"/state/pods/u/volumes/tmp/x\" >/state/pods/u/volumes/tmp/y"
        );
    }

    #[test]
    fn the_longest_mount_wins() {
        let m = map();
        assert_eq!(
            m.rewrite("/var/run/secrets/kubernetes.io/serviceaccount/token"),
            "/state/pods/u/volumes/kube-api-access/token"
        );
        assert_eq!(
            m.rewrite("/var/run/x.pid"),
            "/state/pods/u/volumes/run/x.pid"
        );
    }

    #[test]
    fn lookalikes_are_left_alone() {
        let m = map();
        for text in [
            "/tmpfoo",
            "/tmp.d",
            "x/tmp",
            "/usr/tmp/a",
            "/etc/ryzanstein2",
            "tmp",
            "$(POD_IP)",
        ] {
            assert_eq!(m.rewrite(text), text);
        }
    }

    #[test]
    fn host_paths_of_container_paths() {
        let m = map();
        assert_eq!(
            m.host_path("/etc/ryzanstein/a/b"),
            Some(PathBuf::from("/state/pods/u/volumes/config/a/b"))
        );
        assert_eq!(
            m.host_path("/tmp"),
            Some(PathBuf::from("/state/pods/u/volumes/tmp"))
        );
        assert_eq!(m.host_path("/tmpx"), None);
        assert_eq!(m.host_path("/opt"), None);
    }

    #[test]
    fn root_and_relative_mounts_are_ignored() {
        let mut m = PathMap::default();
        m.insert("/", Path::new("/x"));
        m.insert("data", Path::new("/y"));
        assert!(m.is_empty());
        assert_eq!(m.rewrite("/etc/passwd data"), "/etc/passwd data");
    }
}
