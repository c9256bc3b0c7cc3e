//! Opaque TCP forwarding to a target's endpoint (over mTLS when meshed).

use crate::{balance::Pick, http::client::Dest, io::BoxIo};

use super::Outbound;

/// Forwards `io` to an endpoint of the target `key`, or to `direct` when discovery
/// does not know it, until either side closes.
pub async fn forward(outbound: &Outbound, mut io: BoxIo, key: &str, direct: Dest) {
    let target = outbound.target(key, || direct);
    let connected = match target.balancer.pick().await {
        Ok(Pick::Endpoint(f)) => {
            let c = f.slot.value.tcp.connect().await;
            f.complete();
            c
        }
        Ok(Pick::NotFound) => target.fallback.tcp.connect().await,
        Err(e) => {
            tracing::debug!(target = %key, error = %e, "no endpoint for opaque connection");
            return;
        }
    };
    let mut upstream = match connected {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(target = %key, error = %e, "opaque connect failed");
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut io, &mut upstream).await {
        tracing::debug!(target = %key, error = %e, "opaque connection ended with an error");
    }
}
