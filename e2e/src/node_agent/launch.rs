//! From a container spec to a process: the program (the image's binary), its arguments and
//! environment with `$(VAR)` references expanded and mount paths rewritten
//! ([`super::rewrite`]), its working directory, and its log file.
//!
//! Besides the container's own environment a process gets what a container's would have from
//! its image and runtime: `PATH`, `HOSTNAME` (the pod's name) and `HOME` (the container's own
//! directory, standing for its root filesystem, which is also the working directory when
//! `workingDir` is not under a mount). Where a container mounts a volume at `/tmp`, `TMPDIR`
//! points at it, for programs that ask the environment rather than using `/tmp` literally.
//! Where a container has the service-account mount
//! (`/var/run/secrets/kubernetes.io/serviceaccount` with `token` and `ca.crt`), `KUBECONFIG`
//! points at a kubeconfig for the API server on loopback with that CA and token file: the
//! in-cluster config reads that fixed path, which cannot exist per pod here, and every client
//! (kube-rs's `Config::infer()` among them) reads `KUBECONFIG` first.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::Container;

use super::env::Env;
use super::rewrite::PathMap;

/// The service-account mount of in-cluster clients.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// `PATH` of a typical image.
const IMAGE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A process to start.
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Env,
    pub cwd: PathBuf,
}

/// What a container's process is made from besides its spec.
pub struct LaunchInputs<'a> {
    pub container: &'a Container,
    /// The image's binary.
    pub binary: &'a Path,
    /// The container's environment, resolved ([`super::env::resolve`]) but not yet rewritten.
    pub env: Env,
    pub paths: &'a PathMap,
    /// The container's own directory (its "root filesystem").
    pub root: &'a Path,
    pub pod_name: &'a str,
    /// Where to write the kubeconfig when the container has the service-account mount.
    pub kubeconfig: &'a Path,
    /// The API server's URL.
    pub apiserver: &'a str,
}

/// Work out the process; `Err` is a `StartError` message (e.g. a `command` that is not the
/// image's binary).
pub fn plan(inputs: LaunchInputs<'_>) -> Result<Launch, String> {
    let LaunchInputs {
        container,
        binary,
        env,
        paths,
        root,
        pod_name,
        kubeconfig,
        apiserver,
    } = inputs;
    let command = container.command.clone().unwrap_or_default();
    let mut raw_args: Vec<String> = Vec::new();
    if let Some((first, rest)) = command.split_first() {
        let wanted = binary.file_name().map(|n| n.to_string_lossy().into_owned());
        let given = Path::new(first)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        if given != wanted {
            return Err(format!(
                "exec: \"{first}\": executable file not found: the image maps to {} only \
                 (the e2e node agent runs an image's binary, not other files in it)",
                binary.display()
            ));
        }
        raw_args.extend(rest.iter().cloned());
    }
    raw_args.extend(container.args.clone().unwrap_or_default());
    let args = raw_args
        .iter()
        .map(|a| paths.rewrite(&env.expand(a)))
        .collect();

    let mut env = env;
    env.map_values(|v| paths.rewrite(v));
    let mut full = Env::default();
    full.set("PATH", IMAGE_PATH.to_owned());
    full.set("HOSTNAME", pod_name.to_owned());
    full.set("HOME", root.to_string_lossy().into_owned());
    if let Some(tmp) = paths.host_path("/tmp") {
        full.set("TMPDIR", tmp.to_string_lossy().into_owned());
    }
    if env.get("KUBECONFIG").is_none() {
        if let Some(sa) = paths.host_path(SERVICE_ACCOUNT_DIR) {
            if sa.join("token").is_file() && sa.join("ca.crt").is_file() {
                write_kubeconfig(kubeconfig, apiserver, &sa)?;
                full.set("KUBECONFIG", kubeconfig.to_string_lossy().into_owned());
            }
        }
    }
    for (name, value) in env.iter() {
        full.set(name, value.to_owned());
    }

    let cwd = match container.working_dir.as_deref().filter(|d| !d.is_empty()) {
        Some(dir) => paths
            .host_path(dir)
            .unwrap_or_else(|| root.join(dir.trim_start_matches('/'))),
        None => root.to_path_buf(),
    };
    std::fs::create_dir_all(&cwd).map_err(|e| format!("creating {}: {e}", cwd.display()))?;
    Ok(Launch {
        program: binary.to_path_buf(),
        args,
        env: full,
        cwd,
    })
}

/// A kubeconfig for the service account whose token and CA are in `sa_dir`. The token is
/// referred to by file (`tokenFile`), so clients pick up refreshed tokens.
fn write_kubeconfig(path: &Path, apiserver: &str, sa_dir: &Path) -> Result<(), String> {
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).expect("string");
    let namespace = std::fs::read_to_string(sa_dir.join("namespace")).unwrap_or_default();
    let namespace_line = if namespace.trim().is_empty() {
        String::new()
    } else {
        format!(
            "    namespace: {}\n",
            serde_json::to_string(namespace.trim()).expect("string")
        )
    };
    let text = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: in-cluster\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority: {ca}\n\
         users:\n\
         - name: service-account\n  \
           user:\n    \
             tokenFile: {token}\n\
         contexts:\n\
         - name: in-cluster\n  \
           context:\n    \
             cluster: in-cluster\n    \
             user: service-account\n\
         {namespace_line}\
         current-context: in-cluster\n",
        server = serde_json::to_string(apiserver).expect("string"),
        ca = q(&sa_dir.join("ca.crt")),
        token = q(&sa_dir.join("token")),
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The command for `launch`, its output appended to `log`.
pub fn command(launch: &Launch, log: &Path) -> Result<Command, String> {
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("duplicating a log handle: {e}"))?;
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.args)
        .env_clear()
        .envs(launch.env.iter())
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(json: serde_json::Value) -> Container {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn args_and_env_are_expanded_then_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let sa = dir.path().join("volumes/kube-api-access");
        std::fs::create_dir_all(&sa).unwrap();
        for f in ["token", "ca.crt"] {
            std::fs::write(sa.join(f), "x").unwrap();
        }
        std::fs::write(sa.join("namespace"), "team").unwrap();
        let mut paths = PathMap::default();
        paths.insert("/etc/app", &dir.path().join("volumes/config"));
        paths.insert("/tmp", &dir.path().join("volumes/tmp"));
        paths.insert(SERVICE_ACCOUNT_DIR, &sa);
        let mut env = Env::default();
        env.set("POD_IP", "127.20.1.2".into());
        env.set("CONFIG", "/etc/app/config.yaml".into());
        let c = container(serde_json::json!({
            "name": "app",
            "command": ["/usr/local/bin/server"],
            "args": ["--host", "$(POD_IP)", "--config=$(CONFIG)", "--scratch=/tmp/x", "$$(POD_IP)"],
            "workingDir": "/srv"
        }));
        let root = dir.path().join("containers/app");
        let kubeconfig = dir.path().join("kubeconfig/app");
        let launch = plan(LaunchInputs {
            container: &c,
            binary: Path::new("/build/server"),
            env,
            paths: &paths,
            root: &root,
            pod_name: "p",
            kubeconfig: &kubeconfig,
            apiserver: "https://127.0.0.1:6443",
        })
        .unwrap();
        let d = dir.path().display();
        assert_eq!(launch.program, PathBuf::from("/build/server"));
        assert_eq!(
            launch.args,
            vec![
                "--host".to_owned(),
                "127.20.1.2".to_owned(),
                format!("--config={d}/volumes/config/config.yaml"),
                format!("--scratch={d}/volumes/tmp/x"),
                "$(POD_IP)".to_owned(),
            ]
        );
        assert_eq!(
            launch.env.get("CONFIG"),
            Some(format!("{d}/volumes/config/config.yaml").as_str())
        );
        assert_eq!(
            launch.env.get("TMPDIR"),
            Some(format!("{d}/volumes/tmp").as_str())
        );
        assert_eq!(launch.env.get("HOSTNAME"), Some("p"));
        assert_eq!(launch.cwd, root.join("srv"));
        assert!(launch.cwd.is_dir());
        let kc = launch.env.get("KUBECONFIG").unwrap();
        let parsed = kube::config::Kubeconfig::read_from(kc).unwrap();
        let user = parsed.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(
            user.token_file.as_deref(),
            Some(sa.join("token").to_str().unwrap())
        );
        let ctx = parsed.contexts[0].context.as_ref().unwrap();
        assert_eq!(ctx.namespace.as_deref(), Some("team"));
    }

    #[test]
    fn a_command_other_than_the_image_binary_cannot_start() {
        let c = container(serde_json::json!({ "name": "app", "command": ["sh", "-c", "true"] }));
        let dir = tempfile::tempdir().unwrap();
        let err = plan(LaunchInputs {
            container: &c,
            binary: Path::new("/build/server"),
            env: Env::default(),
            paths: &PathMap::default(),
            root: dir.path(),
            pod_name: "p",
            kubeconfig: &dir.path().join("kc"),
            apiserver: "https://127.0.0.1:6443",
        })
        .unwrap_err();
        assert!(err.contains("\"sh\""), "{err}");
    }
}
