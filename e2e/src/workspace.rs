//! The workspace's own files and binaries, as the e2e tests use them: the repository root, the
//! committed CRDs, and the binaries `cargo test --workspace` builds (the operator, the server)
//! in the same profile directory as the running test.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};

use crate::{Error, Result};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_owned()
}

/// The path of workspace binary `name` (e.g. `ryzanstein-operator`) built in the running test's
/// profile (`target/<profile>/`), or an error saying how to build it.
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| Error::io("locate the test binary", e))?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| Error::NotBuilt {
            dir: exe.clone(),
            reason: "the test binary is not inside a cargo target directory".into(),
        })?;
    let path = profile_dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::NotBuilt {
            dir: profile_dir.to_owned(),
            reason: format!(
                "{name} is missing; `cargo test --workspace` builds it, or run `cargo build --release --bin {name}`"
            ),
        })
    }
}

/// Applies the committed CRDs (`crds/*.yaml`, what `helm install` installs) with server-side
/// apply and waits until the API server serves them.
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut names = Vec::new();
    for file in ["inferencepool.yaml", "modeldeployment.yaml"] {
        let path = repo_root().join("crds").join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&text).map_err(|e| Error::State {
                dir: path.clone(),
                reason: format!("not a CustomResourceDefinition: {e}"),
            })?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("ryzanstein-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        names.push(name);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for name in names {
        loop {
            let established = api
                .get(&name)
                .await?
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::State {
                    dir: repo_root().join("crds"),
                    reason: format!("CRD {name} not established within 30 s"),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
