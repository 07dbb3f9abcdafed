//! Whether an e2e test runs: the control-plane binaries from `make k8s`, or a skip.

use crate::{Binaries, Error};

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
