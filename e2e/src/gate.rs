//! Whether an e2e test runs: the control-plane binaries from `make k8s`, or a skip.

use crate::{Binaries, ControlPlane, Error, Options};

/// The binaries, or `None` when the test should skip because they are not built. With
/// `RYZANSTEIN_E2E=1` (as `make test` sets) a missing build panics instead: there the e2e tests
/// must run.
pub fn binaries_or_skip() -> Option<Binaries> {
    match Binaries::locate() {
        Ok(bins) => Some(bins),
        Err(e @ Error::NotBuilt { .. })
            if std::env::var("RYZANSTEIN_E2E").as_deref() != Ok("1") =>
        {
            eprintln!("SKIPPED: {e}. Set RYZANSTEIN_E2E=1 to make this a failure.");
            None
        }
        Err(e) => panic!("RYZANSTEIN_E2E=1 and the control plane cannot run: {e}"),
    }
}

/// A started control plane, or `None` when the test should skip (see [`binaries_or_skip`]).
/// Panics, with the failing component's log, when it does not start.
pub async fn control_plane_or_skip() -> Option<ControlPlane> {
    let binaries = binaries_or_skip()?;
    Some(
        ControlPlane::start(Options {
            binaries: Some(binaries),
            ..Options::default()
        })
        .await
        .unwrap_or_else(|e| panic!("the control plane did not start: {e}")),
    )
}
