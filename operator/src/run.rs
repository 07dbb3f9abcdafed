//! What the operator binary runs once it is configured: the controllers, behind leader election
//! when asked, until shutdown.

use std::sync::Arc;

use crate::context::Context;
use crate::leader::{LeaderElector, LeaseSettings};
use crate::shutdown::Shutdown;
use crate::Result;
use crate::{deployment_controller, pool_controller};

/// Runs every controller until `shutdown`; they finish their running reconciles first.
pub async fn run_controllers(ctx: Arc<Context>, shutdown: Shutdown) {
    tokio::join!(
        pool_controller::run(ctx.clone(), shutdown.clone()),
        deployment_controller::run(ctx, shutdown),
    );
}

/// Runs the controllers until `shutdown`. With `leader` set, only while this replica holds the
/// Lease: it waits for the Lease, runs the controllers while renewing it, stops them if the
/// Lease is lost (and waits for it again), and on shutdown stops them, then releases the Lease.
pub async fn run(
    ctx: Arc<Context>,
    leader: Option<LeaseSettings>,
    shutdown: Shutdown,
) -> Result<()> {
    let Some(settings) = leader else {
        ctx.metrics.set_leader(true);
        run_controllers(ctx.clone(), shutdown).await;
        ctx.metrics.set_leader(false);
        return Ok(());
    };
    let mut elector = LeaderElector::new(ctx.client.clone(), settings)?;
    loop {
        if !elector.acquire(&shutdown).await {
            return Ok(());
        }
        ctx.metrics.set_leader(true);
        tokio::select! {
            () = run_controllers(ctx.clone(), shutdown.clone()) => {
                ctx.metrics.set_leader(false);
                match elector.release().await {
                    Ok(true) => tracing::info!("released the leader-election Lease"),
                    Ok(false) => tracing::info!("the Lease was no longer ours to release"),
                    Err(e) => tracing::warn!(error = %e, "could not release the Lease; it expires by itself"),
                }
                return Ok(());
            }
            lost = elector.hold() => {
                ctx.metrics.set_leader(false);
                tracing::error!(error = %lost, "stopped the controllers: this replica no longer leads");
                if shutdown.is_triggered() {
                    return Ok(());
                }
            }
        }
    }
}
