//! `helm` and `kubectl`, as a platform team and a tenant run them: the binaries `make kube-tools`
//! installs into `~/.cache/ryzanstein/bin`, pointed at a test's control plane.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::ControlPlane;

/// `~/.cache/ryzanstein/bin/<name>`.
fn cached_tool(name: &str) -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/ryzanstein/bin")
        .join(name)
}

/// helm and kubectl for one control plane.
pub struct KubeTools {
    helm: PathBuf,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    /// helm's cache, config and data directories live here.
    home: PathBuf,
}

/// What a command printed and whether it succeeded.
#[derive(Debug)]
pub struct Output {
    pub success: bool,
    /// stdout, then stderr.
    pub text: String,
}

impl KubeTools {
    /// The tools from `make kube-tools` for `cluster`, or `None` to skip when they are not
    /// installed (a failure with `RYZANSTEIN_E2E=1`).
    pub fn for_cluster_or_skip(cluster: &ControlPlane) -> Option<KubeTools> {
        let (helm, kubectl) = (cached_tool("helm"), cached_tool("kubectl"));
        for tool in [&helm, &kubectl] {
            if !tool.is_file() {
                assert!(
                    std::env::var("RYZANSTEIN_E2E").as_deref() != Ok("1"),
                    "RYZANSTEIN_E2E=1 and there is no {}: run `make kube-tools`",
                    tool.display()
                );
                eprintln!("SKIPPED: no {}; run `make kube-tools`", tool.display());
                return None;
            }
        }
        Some(KubeTools {
            helm,
            kubectl,
            kubeconfig: cluster.kubeconfig().to_owned(),
            home: cluster.state_dir().join("helm"),
        })
    }

    /// Runs helm with `args`; panics with its output when it fails.
    pub fn helm(&self, args: &[&str]) -> String {
        let out = self.try_helm(args);
        assert!(out.success, "helm {args:?} failed:\n{}", out.text);
        out.text
    }

    /// Runs helm with `args`.
    pub fn try_helm(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.helm);
        cmd.args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"));
        run(cmd, None)
    }

    /// Runs kubectl with `args`, feeding it `stdin` (e.g. for `apply -f -`).
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run(cmd, stdin)
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
}

fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("writing to {shown}: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {shown}: {e}"));
    Output {
        success: out.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
