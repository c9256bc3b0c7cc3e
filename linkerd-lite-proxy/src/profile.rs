//! The profile client: a `Destination.GetProfile` stream per outbound HTTP target,
//! reduced to what the proxy applies (the weighted `dst_overrides` of a traffic
//! split, and the retry budget) and published on a `watch` channel.
//!
//! When the target has an outbound policy, the policy governs splits and the
//! overrides are ignored; the retry budget applies either way.
//!
//! A profile never blocks traffic for long: when the destination service does not
//! serve profiles, refuses the target, or cannot be reached, the target is treated
//! as having no overrides (it routes to itself) until a profile arrives.

use std::sync::Arc;
use std::time::Duration;

use linkerd2_proxy_api::destination::{self as api, destination_client::DestinationClient};
use rand::Rng;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::{discovery::ResolutionTask, policy::pick_weighted, retry::BudgetParams};

/// One backend of a traffic split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DstOverride {
    /// The backend's authority (`name:port`), resolved like any outbound target.
    pub authority: Arc<str>,
    /// Relative weight; zero never receives traffic.
    pub weight: u32,
}

/// What the proxy knows of a target's profile.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Profile {
    /// No answer yet.
    #[default]
    Pending,
    /// The target's profile.
    Known {
        /// The traffic split; empty means "send to the target itself".
        overrides: Arc<[DstOverride]>,
        /// The retry budget, when the profile carries one.
        budget: Option<BudgetParams>,
    },
}

impl Profile {
    /// The overrides, or `None` while pending.
    pub fn overrides(&self) -> Option<&[DstOverride]> {
        match self {
            Profile::Pending => None,
            Profile::Known { overrides, .. } => Some(overrides),
        }
    }

    /// The retry budget's parameters: the profile's, else the defaults.
    pub fn budget(&self) -> BudgetParams {
        match self {
            Profile::Known {
                budget: Some(b), ..
            } => *b,
            _ => BudgetParams::default(),
        }
    }
}

/// Picks an override at random in proportion to the weights. `None` when there is
/// none with a positive weight, i.e. traffic stays on the target itself.
pub fn pick<'a, R: Rng + ?Sized>(
    overrides: &'a [DstOverride],
    rng: &mut R,
) -> Option<&'a DstOverride> {
    pick_weighted(overrides, |o| o.weight, rng)
}

/// Starts watching the profile of `path` (an authority `name:port` or `ip:port`).
/// Without a client, the profile is known to be empty at once.
pub fn watch_profile(
    client: Option<DestinationClient<Channel>>,
    path: &str,
    context: &str,
) -> (watch::Receiver<Profile>, ResolutionTask) {
    let Some(client) = client else {
        let (_tx, rx) = watch::channel(no_overrides());
        return (rx, ResolutionTask::none());
    };
    let (tx, rx) = watch::channel(Profile::Pending);
    let req = api::GetDestination {
        scheme: "k8s".into(),
        path: path.to_string(),
        context_token: context.to_string(),
    };
    (rx, ResolutionTask::spawn(run(client, req, tx)))
}

fn no_overrides() -> Profile {
    Profile::Known {
        overrides: Arc::from(Vec::new()),
        budget: None,
    }
}

/// Leaves a still-pending profile as "no overrides", so requests stop waiting.
fn settle(tx: &watch::Sender<Profile>) {
    tx.send_if_modified(|p| {
        let pending = *p == Profile::Pending;
        if pending {
            *p = no_overrides();
        }
        pending
    });
}

async fn run(
    mut client: DestinationClient<Channel>,
    req: api::GetDestination,
    tx: watch::Sender<Profile>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.get_profile(req.clone()).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(profile)) => {
                            backoff = Duration::from_millis(100);
                            let new = convert(profile);
                            tx.send_if_modified(|p| {
                                let changed = *p != new;
                                *p = new;
                                changed
                            });
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(path = %req.path, %status, "profile stream failed");
                            break;
                        }
                    }
                }
            }
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::InvalidArgument | tonic::Code::Unimplemented
                ) =>
            {
                tracing::debug!(path = %req.path, %status, "no profile for this target");
                tx.send_replace(no_overrides());
                // Hold the (empty) answer for as long as the target lives.
                tx.closed().await;
                return;
            }
            Err(status) => {
                tracing::debug!(path = %req.path, %status, "profile lookup failed");
            }
        }
        settle(&tx);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = tx.closed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn convert(profile: api::DestinationProfile) -> Profile {
    let overrides: Vec<DstOverride> = profile
        .dst_overrides
        .iter()
        .filter(|d| !d.authority.is_empty())
        .map(|d| DstOverride {
            authority: d.authority.as_str().into(),
            weight: d.weight,
        })
        .collect();
    Profile::Known {
        overrides: overrides.into(),
        budget: profile.retry_budget.as_ref().map(BudgetParams::from_proto),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn ov(authority: &str, weight: u32) -> DstOverride {
        DstOverride {
            authority: authority.into(),
            weight,
        }
    }

    fn counts(overrides: &[DstOverride], n: usize) -> Vec<usize> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut counts = vec![0; overrides.len()];
        for _ in 0..n {
            let o = pick(overrides, &mut rng).expect("a positive weight exists");
            let i = overrides
                .iter()
                .position(|x| x == o)
                .expect("from the list");
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn picks_follow_the_weights() {
        let o = [ov("v1:80", 900), ov("v2:80", 100)];
        let c = counts(&o, 10_000);
        assert!((8_600..=9_400).contains(&c[0]), "{c:?}");
        assert!((600..=1_400).contains(&c[1]), "{c:?}");

        let o = [ov("a:80", 1), ov("b:80", 1), ov("c:80", 2)];
        let c = counts(&o, 8_000);
        assert!((1_600..=2_400).contains(&c[0]), "{c:?}");
        assert!((1_600..=2_400).contains(&c[1]), "{c:?}");
        assert!((3_400..=4_600).contains(&c[2]), "{c:?}");
    }

    #[test]
    fn zero_weights_never_receive_traffic() {
        let o = [ov("v1:80", 0), ov("v2:80", 1000), ov("v3:80", 0)];
        assert_eq!(counts(&o, 2_000), vec![0, 2_000, 0]);
    }

    #[test]
    fn all_zero_or_no_overrides_stay_on_the_target() {
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(pick(&[], &mut rng), None);
        assert_eq!(pick(&[ov("v1:80", 0), ov("v2:80", 0)], &mut rng), None);
    }

    #[test]
    fn profiles_keep_only_named_backends() {
        let p = convert(api::DestinationProfile {
            dst_overrides: vec![
                api::WeightedDst {
                    authority: "web-v1.shop.svc.cluster.local:80".into(),
                    weight: 500,
                    ..Default::default()
                },
                api::WeightedDst {
                    authority: String::new(),
                    weight: 500,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        assert_eq!(
            p.overrides(),
            Some(&[ov("web-v1.shop.svc.cluster.local:80", 500)][..])
        );
        assert_eq!(Profile::Pending.overrides(), None);
        assert_eq!(p.budget(), BudgetParams::default(), "no budget: defaults");

        let p = convert(api::DestinationProfile {
            retry_budget: Some(api::RetryBudget {
                retry_ratio: 0.5,
                min_retries_per_second: 1,
                ttl: Some(prost_types::Duration {
                    seconds: 3,
                    nanos: 0,
                }),
            }),
            ..Default::default()
        });
        assert_eq!(
            p.budget(),
            BudgetParams {
                ratio: 0.5,
                min_per_second: 1,
                ttl: Duration::from_secs(3)
            }
        );
    }

    #[test]
    fn settling_only_replaces_a_pending_profile() {
        let (tx, rx) = watch::channel(Profile::Pending);
        settle(&tx);
        assert_eq!(*rx.borrow(), no_overrides());
        let known = Profile::Known {
            overrides: Arc::from(vec![ov("v2:80", 1)]),
            budget: None,
        };
        tx.send_replace(known.clone());
        settle(&tx);
        assert_eq!(*rx.borrow(), known);
    }
}
