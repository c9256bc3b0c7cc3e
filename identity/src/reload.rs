//! Noticing that files changed, by polling their contents.
//!
//! Polling the bytes (rather than inotify) also catches Kubernetes' atomic symlink swaps
//! of mounted Secrets and ConfigMaps, and costs a few small reads per interval.

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Reads every file in order.
pub(crate) async fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, (PathBuf, std::io::Error)> {
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        out.push(tokio::fs::read(path).await.map_err(|e| (path.clone(), e))?);
    }
    Ok(out)
}

/// Polls `paths` every `interval` and calls `on_change` with their contents whenever
/// any of them differs from `initial` or from the last contents seen.
///
/// `on_change` is called once per distinct content, whether it accepts it or not, so a
/// half-written rotation is retried as soon as the other file lands.
pub(crate) fn spawn_poll<F>(
    paths: Vec<PathBuf>,
    interval: Duration,
    initial: Vec<Vec<u8>>,
    mut on_change: F,
) -> JoinHandle<()>
where
    F: FnMut(&[Vec<u8>]) + Send + 'static,
{
    tokio::spawn(async move {
        let mut last = initial;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.tick().await;
        let mut read_failed = false;
        loop {
            tick.tick().await;
            match read_all(&paths).await {
                Ok(now) => {
                    read_failed = false;
                    if now != last {
                        on_change(&now);
                        last = now;
                    }
                }
                Err((path, error)) => {
                    if !read_failed {
                        tracing::warn!(path = %path.display(), %error, "cannot read watched file; keeping the last good contents");
                    }
                    read_failed = true;
                }
            }
        }
    })
}
