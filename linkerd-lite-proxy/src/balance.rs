//! Power-of-two-choices load balancing over peak-EWMA latency, fed live by discovery.
//!
//! Each endpoint keeps a latency estimate that jumps up to any slower sample at once
//! (the "peak") and decays towards faster samples over the decay window. Its cost is
//! that estimate times one plus its in-flight requests. A pick draws two endpoints
//! at random and takes the cheaper.
//!
//! When no endpoint is available, a request waits for discovery up to the fail-fast
//! timeout, in a bounded queue; beyond the bound it fails at once.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use rand::Rng;
use tokio::{sync::watch, time::Instant};

use crate::discovery::{Endpoint, Resolution};

// === impl PeakEwma ===

/// A peak-sensitive exponentially weighted moving average of latency.
#[derive(Debug)]
pub struct PeakEwma {
    estimate_ns: f64,
    updated: Instant,
    decay_ns: f64,
}

impl PeakEwma {
    /// Starts at `default_rtt`.
    pub fn new(default_rtt: Duration, decay: Duration, now: Instant) -> Self {
        Self {
            estimate_ns: default_rtt.as_nanos() as f64,
            updated: now,
            decay_ns: decay.as_nanos().max(1) as f64,
        }
    }

    /// Adds a latency sample observed at `now`.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        if rtt > self.estimate_ns {
            self.estimate_ns = rtt;
        } else {
            let elapsed = now.saturating_duration_since(self.updated).as_nanos() as f64;
            let decay = (-elapsed / self.decay_ns).exp();
            self.estimate_ns = self.estimate_ns * decay + rtt * (1.0 - decay);
        }
        self.updated = now;
    }

    /// The current estimate, in nanoseconds.
    pub fn estimate_ns(&self) -> f64 {
        self.estimate_ns
    }
}

/// An endpoint in the balancer with its per-endpoint value (e.g. connection pools).
#[derive(Debug)]
pub struct Slot<T> {
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
    /// What the balancer's maker built for it.
    pub value: T,
    ewma: Mutex<PeakEwma>,
    pending: AtomicUsize,
}

impl<T> Slot<T> {
    fn cost(&self) -> f64 {
        let pending = self.pending.load(Ordering::Relaxed) as f64;
        let est = self
            .ewma
            .lock()
            .map(|e| e.estimate_ns())
            .unwrap_or(f64::MAX);
        est * (pending + 1.0)
    }
}

/// A request in flight on a slot; counts as load until dropped.
#[derive(Debug)]
pub struct InFlight<T> {
    /// The chosen slot.
    pub slot: Arc<Slot<T>>,
    start: Instant,
}

impl<T> InFlight<T> {
    /// Records the request's latency (call when the response headers arrive).
    pub fn complete(&self) {
        let now = Instant::now();
        if let Ok(mut e) = self.slot.ewma.lock() {
            e.observe(now.saturating_duration_since(self.start), now);
        }
    }
}

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        self.slot.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The outcome of a pick.
#[derive(Debug)]
pub enum Pick<T> {
    /// Send to this endpoint.
    Endpoint(InFlight<T>),
    /// Discovery does not know the target; use the original address.
    NotFound,
}

/// Why no endpoint was picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// No endpoint became available within the fail-fast timeout.
    #[error("no endpoints available")]
    NoEndpoints,
    /// Too many requests are already waiting for an endpoint.
    #[error("too many requests waiting for an endpoint")]
    QueueFull,
}

/// Balancer settings.
#[derive(Clone, Copy, Debug)]
pub struct BalanceConfig {
    /// How long a pick waits for an endpoint.
    pub failfast: Duration,
    /// How many picks may wait at once.
    pub max_waiting: usize,
    /// Peak-EWMA decay window.
    pub decay: Duration,
    /// Peak-EWMA estimate of a new endpoint.
    pub default_rtt: Duration,
}

type Maker<T> = Box<dyn Fn(&Arc<Endpoint>) -> T + Send + Sync>;

struct State<T> {
    rx: watch::Receiver<Resolution>,
    /// The resolution the slots were built from.
    last: Resolution,
    not_found: bool,
    slots: Arc<[Arc<Slot<T>>]>,
}

/// A p2c peak-EWMA balancer over the endpoints a discovery watch publishes.
pub struct Balancer<T> {
    state: Mutex<State<T>>,
    make: Maker<T>,
    waiting: AtomicUsize,
    config: BalanceConfig,
}

impl<T> std::fmt::Debug for Balancer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("config", &self.config)
            .finish()
    }
}

impl<T: Send + Sync + 'static> Balancer<T> {
    /// Balances over what `rx` publishes, building each endpoint's value with `make`.
    pub fn new(
        rx: watch::Receiver<Resolution>,
        config: BalanceConfig,
        make: impl Fn(&Arc<Endpoint>) -> T + Send + Sync + 'static,
    ) -> Self {
        let mut rx = rx;
        // The first value is news too, whatever it is.
        rx.mark_changed();
        Self {
            state: Mutex::new(State {
                rx,
                last: Resolution::Pending,
                not_found: false,
                slots: Arc::from(Vec::new()),
            }),
            make: Box::new(make),
            waiting: AtomicUsize::new(0),
            config,
        }
    }

    /// The endpoints currently balanced over.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.snapshot()
            .map(|(slots, _, _)| slots.iter().map(|s| s.endpoint.addr).collect())
            .unwrap_or_default()
    }

    /// Refreshes from discovery and returns the slots, whether the target is
    /// unknown, and a receiver to wait on.
    #[allow(clippy::type_complexity)]
    fn snapshot(&self) -> Option<(Arc<[Arc<Slot<T>>]>, bool, watch::Receiver<Resolution>)> {
        let mut st = self.state.lock().ok()?;
        // A closed channel still holds its final value, which may be news.
        let changed = match st.rx.has_changed() {
            Ok(changed) => changed,
            Err(_) => !same(&st.last, &st.rx.borrow()),
        };
        if changed {
            let res = st.rx.borrow_and_update().clone();
            st.last = res.clone();
            st.not_found = res == Resolution::NotFound;
            let eps = match res {
                Resolution::Endpoints(eps) => eps,
                _ => Default::default(),
            };
            let old: HashMap<SocketAddr, Arc<Slot<T>>> = st
                .slots
                .iter()
                .map(|s| (s.endpoint.addr, s.clone()))
                .collect();
            let now = Instant::now();
            st.slots = eps
                .values()
                .map(|ep| match old.get(&ep.addr) {
                    Some(s) if s.endpoint == *ep => s.clone(),
                    _ => Arc::new(Slot {
                        endpoint: ep.clone(),
                        value: (self.make)(ep),
                        ewma: Mutex::new(PeakEwma::new(
                            self.config.default_rtt,
                            self.config.decay,
                            now,
                        )),
                        pending: AtomicUsize::new(0),
                    }),
                })
                .collect();
        }
        Some((st.slots.clone(), st.not_found, st.rx.clone()))
    }

    /// Waits, at most `max`, until discovery has answered at all.
    pub async fn resolved(&self, max: Duration) {
        let deadline = Instant::now() + max;
        loop {
            let Some(mut rx) = self.state.lock().ok().map(|st| st.rx.clone()) else {
                return;
            };
            if *rx.borrow_and_update() != Resolution::Pending {
                return;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }

    /// Whether discovery marks every endpoint as opaque (and there is at least one).
    pub fn is_opaque(&self) -> bool {
        self.snapshot().is_some_and(|(slots, _, _)| {
            !slots.is_empty() && slots.iter().all(|s| s.endpoint.opaque)
        })
    }

    /// Picks an endpoint, waiting for discovery if there is none yet.
    pub async fn pick(&self) -> Result<Pick<T>, PickError> {
        let deadline = Instant::now() + self.config.failfast;
        let mut waiting = None;
        loop {
            let (slots, not_found, mut rx) = self.snapshot().ok_or(PickError::NoEndpoints)?;
            if not_found {
                return Ok(Pick::NotFound);
            }
            if let Some(slot) = choose(&slots) {
                slot.pending.fetch_add(1, Ordering::Relaxed);
                return Ok(Pick::Endpoint(InFlight {
                    slot,
                    start: Instant::now(),
                }));
            }
            if waiting.is_none() {
                waiting = Some(WaitGuard::enter(&self.waiting, self.config.max_waiting)?);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(PickError::NoEndpoints),
            }
        }
    }
}

fn same(a: &Resolution, b: &Resolution) -> bool {
    match (a, b) {
        (Resolution::Endpoints(a), Resolution::Endpoints(b)) => Arc::ptr_eq(a, b),
        (Resolution::Pending, Resolution::Pending)
        | (Resolution::NotFound, Resolution::NotFound) => true,
        _ => false,
    }
}

struct WaitGuard<'a>(&'a AtomicUsize);

impl<'a> WaitGuard<'a> {
    fn enter(count: &'a AtomicUsize, max: usize) -> Result<Self, PickError> {
        if count.fetch_add(1, Ordering::AcqRel) >= max {
            count.fetch_sub(1, Ordering::AcqRel);
            return Err(PickError::QueueFull);
        }
        Ok(Self(count))
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn choose<T>(slots: &[Arc<Slot<T>>]) -> Option<Arc<Slot<T>>> {
    match slots.len() {
        0 => None,
        1 => Some(slots[0].clone()),
        n => {
            let mut rng = rand::rng();
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (ca, cb) = (slots[a].cost(), slots[b].cost());
            Some(slots[if cb < ca { b } else { a }].clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ep(port: u16) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            identity: None,
            h2: false,
            opaque: false,
            opaque_transport_port: None,
            weight: 1,
            labels: Arc::from(Vec::new()),
        })
    }

    fn set(ports: &[u16]) -> Resolution {
        Resolution::Endpoints(Arc::new(
            ports
                .iter()
                .map(|p| (ep(*p).addr, ep(*p)))
                .collect::<BTreeMap<_, _>>(),
        ))
    }

    fn config() -> BalanceConfig {
        BalanceConfig {
            failfast: Duration::from_secs(3),
            max_waiting: 2,
            decay: Duration::from_secs(10),
            default_rtt: Duration::from_millis(30),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(Duration::from_millis(30), Duration::from_secs(10), t0);
        e.observe(Duration::from_millis(100), t0);
        assert_eq!(e.estimate_ns(), 100e6, "a slower sample is taken at once");
        tokio::time::advance(Duration::from_secs(10)).await;
        e.observe(Duration::from_millis(10), Instant::now());
        // After one decay window the old estimate keeps weight 1/e.
        let want = 100e6 / std::f64::consts::E + 10e6 * (1.0 - 1.0 / std::f64::consts::E);
        assert!((e.estimate_ns() - want).abs() < 1.0, "{}", e.estimate_ns());
        // Samples in quick succession barely move a low estimate.
        let before = e.estimate_ns();
        e.observe(Duration::from_millis(1), Instant::now());
        assert_eq!(e.estimate_ns(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn p2c_prefers_the_faster_endpoint() {
        let (_tx, rx) = watch::channel(set(&[1, 2]));
        let b = Balancer::new(rx, config(), |_| ());
        let mut fast = 0;
        for _ in 0..100 {
            let Pick::Endpoint(f) = b.pick().await.unwrap() else {
                panic!()
            };
            if f.slot.endpoint.addr.port() == 2 {
                fast += 1;
                tokio::time::advance(Duration::from_millis(1)).await;
            } else {
                tokio::time::advance(Duration::from_millis(500)).await;
            }
            f.complete();
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        // With two endpoints both are always candidates, so the cheaper always wins
        // unless the slow one has not been sampled yet.
        assert!(fast >= 99, "fast endpoint got {fast}/100");
    }

    #[tokio::test(start_paused = true)]
    async fn picks_wait_for_discovery_then_fail_fast() {
        let (tx, rx) = watch::channel(Resolution::Pending);
        let b = Arc::new(Balancer::new(rx, config(), |_| ()));
        let start = Instant::now();
        assert_eq!(b.pick().await.unwrap_err(), PickError::NoEndpoints);
        assert_eq!(start.elapsed(), Duration::from_secs(3));

        let waiter = tokio::spawn({
            let b = b.clone();
            async move { matches!(b.pick().await, Ok(Pick::Endpoint(_))) }
        });
        tokio::time::advance(Duration::from_secs(1)).await;
        tx.send_replace(set(&[7]));
        assert!(
            waiter.await.unwrap(),
            "a waiting pick gets the new endpoint"
        );
        assert_eq!(b.endpoints(), vec![SocketAddr::from(([127, 0, 0, 1], 7))]);

        tx.send_replace(Resolution::NotFound);
        assert!(matches!(b.pick().await, Ok(Pick::NotFound)));

        // A resolution that ends (sender dropped) after its last word still counts.
        tx.send_replace(set(&[8]));
        drop(tx);
        assert!(matches!(b.pick().await, Ok(Pick::Endpoint(_))));
        assert_eq!(b.endpoints(), vec![SocketAddr::from(([127, 0, 0, 1], 8))]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_queue_is_bounded() {
        let (_tx, rx) = watch::channel(Resolution::Pending);
        let b = Arc::new(Balancer::new(rx, config(), |_| ()));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move { b.pick().await.map(|_| ()) })
            })
            .collect();
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(b.pick().await.unwrap_err(), PickError::QueueFull);
        for w in waiters {
            assert_eq!(w.await.unwrap(), Err(PickError::NoEndpoints));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn resolved_waits_for_the_first_answer_and_reports_opaque_targets() {
        let (tx, rx) = watch::channel(Resolution::Pending);
        let b = Balancer::new(rx, config(), |_| ());
        let start = Instant::now();
        b.resolved(Duration::from_millis(500)).await;
        assert_eq!(start.elapsed(), Duration::from_millis(500), "bounded wait");
        assert!(!b.is_opaque());
        let mut opaque = (*ep(25)).clone();
        opaque.opaque = true;
        let opaque = Arc::new(opaque);
        tx.send_replace(Resolution::Endpoints(Arc::new(
            [(opaque.addr, opaque.clone())].into_iter().collect(),
        )));
        let start = Instant::now();
        b.resolved(Duration::from_millis(500)).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(b.is_opaque());
    }

    #[tokio::test]
    async fn slots_survive_unrelated_updates() {
        let (tx, rx) = watch::channel(set(&[1]));
        let made = Arc::new(AtomicUsize::new(0));
        let b = Balancer::new(rx, config(), {
            let made = made.clone();
            move |_| made.fetch_add(1, Ordering::SeqCst)
        });
        drop(b.pick().await.unwrap());
        tx.send_replace(set(&[1, 2]));
        drop(b.pick().await.unwrap());
        assert_eq!(made.load(Ordering::SeqCst), 2, "endpoint 1 kept its slot");
        tx.send_replace(set(&[2]));
        drop(b.pick().await.unwrap());
        assert_eq!(b.endpoints().len(), 1);
    }
}
