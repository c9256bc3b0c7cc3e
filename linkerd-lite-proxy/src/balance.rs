//! Power-of-two-choices load balancing over peak-EWMA latency, fed live by discovery.
//!
//! Each endpoint keeps a latency estimate that jumps up to any slower sample at once
//! (the "peak") and decays towards faster samples over the decay window. Its cost is
//! that estimate times one plus its in-flight requests. A pick draws two endpoints
//! at random and takes the cheaper.
//!
//! When no endpoint is available, a request waits for discovery up to the fail-fast
//! timeout, in a bounded queue; beyond the bound it fails at once.
//!
//! With failure accrual on (an outbound policy turns it on), each endpoint has a
//! circuit breaker ([`breaker`]): an endpoint with too many consecutive failures
//! leaves the ready set for a backoff, then takes a single probe. An ejected endpoint
//! counts as unavailable, so when all are ejected requests queue as if there were
//! none, until a probe is due or the fail-fast timeout passes.

mod breaker;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use rand::Rng;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use self::breaker::{AccrualCell, Avail, Breaker, Transition};
use crate::discovery::{Endpoint, Resolution};

pub use self::breaker::FailureAccrual;

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
    breaker: Breaker,
    shared: Arc<Shared>,
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
    /// This request is the probe of an ejected endpoint.
    probe: bool,
    recorded: bool,
}

impl<T> InFlight<T> {
    /// Records the request's latency (call when the response headers arrive).
    pub fn complete(&self) {
        let now = Instant::now();
        if let Ok(mut e) = self.slot.ewma.lock() {
            e.observe(now.saturating_duration_since(self.start), now);
        }
    }

    /// Records the outcome for failure accrual: `success` is false for a 5xx
    /// response or an error.
    pub fn record(&mut self, success: bool) {
        self.recorded = true;
        let shared = &self.slot.shared;
        let t = self
            .slot
            .breaker
            .record(success, self.probe, &shared.accrual, || shared.now_ms());
        match t {
            None => {}
            Some(Transition::Opened(wait)) => {
                tracing::info!(endpoint = %self.slot.endpoint.addr, ?wait, "endpoint ejected after consecutive failures");
                shared.ready.notify_waiters();
            }
            Some(Transition::Closed) => {
                tracing::info!(endpoint = %self.slot.endpoint.addr, "endpoint restored");
                shared.ready.notify_waiters();
            }
        }
    }
}

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        self.slot.pending.fetch_sub(1, Ordering::Relaxed);
        if self.probe && !self.recorded {
            let shared = &self.slot.shared;
            self.slot.breaker.probe_abandoned(shared.now_ms());
            shared.ready.notify_waiters();
        }
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

/// What a balancer shares with its slots: settings a policy may change, the clock
/// breakers count from, and the wake-up for queued picks.
#[derive(Debug)]
struct Shared {
    accrual: AccrualCell,
    epoch: Instant,
    /// Woken when an endpoint is ejected or restored.
    ready: Notify,
    failfast_ms: AtomicU64,
    max_waiting: AtomicUsize,
    /// The policy whose queue and accrual settings were applied last.
    applied: AtomicU64,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        ms(Instant::now().saturating_duration_since(self.epoch))
    }

    fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

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
    shared: Arc<Shared>,
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
            shared: Arc::new(Shared {
                accrual: AccrualCell::default(),
                epoch: Instant::now(),
                ready: Notify::new(),
                failfast_ms: AtomicU64::new(ms(config.failfast)),
                max_waiting: AtomicUsize::new(config.max_waiting),
                applied: AtomicU64::new(0),
            }),
            config,
        }
    }

    /// Applies an outbound policy's settings for this balancer's endpoints: failure
    /// accrual (`None` turns it off) and, when given, the queue's capacity and
    /// fail-fast timeout. `id` names the policy: a policy already applied is skipped
    /// with one atomic load, so callers may call this on every request.
    pub fn configure(&self, id: u64, accrual: Option<FailureAccrual>, queue: Option<Queue>) {
        // A load first: the common case (already applied) writes nothing.
        if self.shared.applied.load(Ordering::Acquire) == id
            || self.shared.applied.swap(id, Ordering::AcqRel) == id
        {
            return;
        }
        self.shared.accrual.set(accrual);
        let q = queue.unwrap_or(Queue {
            capacity: self.config.max_waiting,
            failfast: self.config.failfast,
        });
        self.shared
            .failfast_ms
            .store(ms(q.failfast), Ordering::Relaxed);
        self.shared.max_waiting.store(q.capacity, Ordering::Relaxed);
        // Breakers of endpoints that stay ejected under new settings close on their
        // next probe; waiters re-check at once.
        self.shared.ready.notify_waiters();
    }

    /// The endpoints currently ejected by failure accrual.
    pub fn ejected(&self) -> Vec<SocketAddr> {
        self.snapshot()
            .map(|(slots, _, _)| {
                slots
                    .iter()
                    .filter(|s| s.breaker.avail(|| 0) != Avail::Ready)
                    .map(|s| s.endpoint.addr)
                    .collect()
            })
            .unwrap_or_default()
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
                        breaker: Breaker::default(),
                        shared: self.shared.clone(),
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

    /// Picks an endpoint, waiting for discovery if there is none yet, or for an
    /// ejected endpoint's probe when all are ejected.
    pub async fn pick(&self) -> Result<Pick<T>, PickError> {
        let failfast = Duration::from_millis(self.shared.failfast_ms.load(Ordering::Relaxed));
        let deadline = Instant::now() + failfast;
        let mut waiting = None;
        loop {
            let (slots, not_found, mut rx) = self.snapshot().ok_or(PickError::NoEndpoints)?;
            if not_found {
                return Ok(Pick::NotFound);
            }
            if let Choice::Picked(p) = choose(&slots, &self.shared) {
                return Ok(p);
            }
            if waiting.is_none() {
                let max = self.shared.max_waiting.load(Ordering::Relaxed);
                waiting = Some(WaitGuard::enter(&self.waiting, max)?);
            }
            // Listen before looking again, so a restore in between is not missed.
            let ready = self.shared.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            let next_probe = match choose(&slots, &self.shared) {
                Choice::Picked(p) => return Ok(p),
                Choice::Unavailable { next_probe } => next_probe,
            };
            let wake = next_probe
                .map(|at| self.shared.instant(at).min(deadline))
                .unwrap_or(deadline);
            tokio::select! {
                res = rx.changed() => if res.is_err() {
                    return Err(PickError::NoEndpoints);
                },
                () = &mut ready => {}
                () = tokio::time::sleep_until(wake) => if Instant::now() >= deadline {
                    return Err(PickError::NoEndpoints);
                },
            }
        }
    }
}

/// A backend's queue settings from an outbound policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Queue {
    /// How many picks may wait at once.
    pub capacity: usize,
    /// How long a pick waits for an endpoint.
    pub failfast: Duration,
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

enum Choice<T> {
    Picked(Pick<T>),
    /// Nothing is available; the earliest ejected endpoint is due for a probe at
    /// this many milliseconds after the epoch.
    Unavailable {
        next_probe: Option<u64>,
    },
}

/// Power of two choices over the available endpoints. With every breaker closed
/// (the common case) this costs two acquire loads more than a plain p2c; only when
/// both draws hit ejected endpoints are all slots scanned. An ejected endpoint due
/// for its probe is preferred when drawn.
fn choose<T>(slots: &[Arc<Slot<T>>], shared: &Shared) -> Choice<T> {
    let now = std::cell::OnceCell::new();
    let now_ms = || *now.get_or_init(|| shared.now_ms());
    // A lost race for a probe changes the state; look again, a bounded few times.
    for _ in 0..4 {
        let chosen = match slots.len() {
            0 => return Choice::Unavailable { next_probe: None },
            1 => match slots[0].breaker.avail(now_ms) {
                Avail::Ejected(at) => return Choice::Unavailable { next_probe: at },
                a => (0, a),
            },
            n => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let (aa, ab) = (
                    slots[a].breaker.avail(now_ms),
                    slots[b].breaker.avail(now_ms),
                );
                match (aa, ab) {
                    (Avail::Ejected(_), Avail::Ejected(_)) => match scan(slots, now_ms, &mut rng) {
                        Ok(pick) => pick,
                        Err(next_probe) => return Choice::Unavailable { next_probe },
                    },
                    (Avail::Ejected(_), _) => (b, ab),
                    (_, Avail::Ejected(_)) => (a, aa),
                    // A due probe goes first: a recovered endpoint must get its
                    // chance, however its latency estimate compares.
                    (Avail::Probe, _) => (a, aa),
                    (_, Avail::Probe) => (b, ab),
                    _ if slots[b].cost() < slots[a].cost() => (b, ab),
                    _ => (a, aa),
                }
            }
        };
        let (i, avail) = chosen;
        let probe = avail == Avail::Probe;
        if probe && !slots[i].breaker.claim_probe() {
            continue;
        }
        let slot = slots[i].clone();
        slot.pending.fetch_add(1, Ordering::Relaxed);
        return Choice::Picked(Pick::Endpoint(InFlight {
            slot,
            start: Instant::now(),
            probe,
            recorded: false,
        }));
    }
    Choice::Unavailable { next_probe: None }
}

/// A random available slot, or the earliest time one is due for a probe.
fn scan<T, R: Rng>(
    slots: &[Arc<Slot<T>>],
    now_ms: impl Fn() -> u64 + Copy,
    rng: &mut R,
) -> Result<(usize, Avail), Option<u64>> {
    let mut available = 0;
    let mut next_probe: Option<u64> = None;
    for s in slots {
        match s.breaker.avail(now_ms) {
            Avail::Ejected(at) => {
                next_probe = match (next_probe, at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            _ => available += 1,
        }
    }
    if available == 0 {
        return Err(next_probe);
    }
    let mut k = rng.random_range(0..available);
    for (i, s) in slots.iter().enumerate() {
        let a = s.breaker.avail(now_ms);
        if matches!(a, Avail::Ejected(_)) {
            continue;
        }
        if k == 0 {
            return Ok((i, a));
        }
        k -= 1;
    }
    Err(next_probe)
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

    fn accrual(max_failures: u32) -> Option<FailureAccrual> {
        Some(FailureAccrual {
            max_failures,
            backoff: crate::backoff::ExponentialBackoff::new(
                Duration::from_secs(1),
                Duration::from_secs(8),
                0.0,
            )
            .unwrap(),
        })
    }

    async fn pick_port(b: &Balancer<()>) -> (u16, InFlight<()>) {
        match b.pick().await.unwrap() {
            Pick::Endpoint(f) => (f.slot.endpoint.addr.port(), f),
            Pick::NotFound => panic!("target not found"),
        }
    }

    /// Sends `n` requests; port 1 always fails, others succeed. Returns the count
    /// each port received.
    async fn traffic(b: &Balancer<()>, n: usize) -> BTreeMap<u16, usize> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let (port, mut f) = pick_port(b).await;
            *seen.entry(port).or_default() += 1;
            f.complete();
            f.record(port != 1);
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_endpoint_is_ejected_probed_after_the_backoff_and_restored() {
        let (_tx, rx) = watch::channel(set(&[1, 2]));
        let b = Balancer::new(rx, config(), |_| ());
        b.configure(1, accrual(3), None);
        let seen = traffic(&b, 100).await;
        assert_eq!(seen.get(&1), Some(&3), "ejected after 3 failures: {seen:?}");
        assert_eq!(b.ejected(), vec![SocketAddr::from(([127, 0, 0, 1], 1))]);

        // After the 1 s backoff, one request probes it; it fails again, and the
        // next ejection lasts 2 s.
        tokio::time::advance(Duration::from_millis(1000)).await;
        let seen = traffic(&b, 100).await;
        assert_eq!(seen.get(&1), Some(&1), "one probe: {seen:?}");
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert_eq!(traffic(&b, 50).await.get(&1), None, "still ejected");
        tokio::time::advance(Duration::from_millis(1)).await;

        // The probe succeeds: the endpoint is back in the ready set.
        let (port, mut probe) = loop {
            let (port, mut f) = pick_port(&b).await;
            if port == 1 {
                break (port, f);
            }
            f.record(true);
        };
        assert_eq!(port, 1);
        probe.record(true);
        drop(probe);
        assert!(b.ejected().is_empty());
        // Back in the ready set, it competes on latency again: with the other
        // endpoint slower, it takes traffic.
        let mut back = 0;
        for _ in 0..100 {
            let (port, mut f) = pick_port(&b).await;
            back += usize::from(port == 1);
            if port == 2 {
                tokio::time::advance(Duration::from_millis(50)).await;
            }
            f.complete();
            f.record(true);
        }
        assert!(back > 20, "restored endpoint got {back}/100");
    }

    #[tokio::test(start_paused = true)]
    async fn when_all_are_ejected_picks_wait_for_a_probe_or_fail_fast() {
        let (_tx, rx) = watch::channel(set(&[1]));
        let b = Arc::new(Balancer::new(rx, config(), |_| ()));
        b.configure(1, accrual(1), None);
        let (_, mut f) = pick_port(&b).await;
        f.record(false);
        drop(f);

        // Ejected for 1 s, less than the 3 s fail-fast: the pick waits for the probe.
        let start = Instant::now();
        let (_, mut probe) = pick_port(&b).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // While the probe is out, another pick waits for its outcome.
        let waiter = tokio::spawn({
            let b = b.clone();
            async move {
                let start = Instant::now();
                let (_, f) = pick_port(&b).await;
                (start.elapsed(), f.probe)
            }
        });
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_millis(300)).await;
        probe.record(true);
        drop(probe);
        let (waited, probe) = waiter.await.unwrap();
        assert_eq!(waited, Duration::from_millis(300), "woken by the restore");
        assert!(!probe);

        // Ejected for longer than the fail-fast timeout (after failed probes): 503
        // after the fail-fast timeout, like no endpoints.
        b.configure(2, accrual(1), None);
        let (_, mut f) = pick_port(&b).await;
        f.record(false);
        drop(f);
        for _ in 0..2 {
            tokio::time::advance(Duration::from_secs(8)).await;
            let (_, mut f) = pick_port(&b).await;
            f.record(false);
        }
        let start = Instant::now();
        assert_eq!(b.pick().await.unwrap_err(), PickError::NoEndpoints);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_policy_queue_replaces_the_configured_one() {
        let (_tx, rx) = watch::channel(Resolution::Pending);
        let b = Balancer::new(rx, config(), |_| ());
        let queue = Queue {
            capacity: 5,
            failfast: Duration::from_millis(250),
        };
        b.configure(7, None, Some(queue));
        let start = Instant::now();
        assert_eq!(b.pick().await.unwrap_err(), PickError::NoEndpoints);
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        b.configure(8, None, None);
        let start = Instant::now();
        assert_eq!(b.pick().await.unwrap_err(), PickError::NoEndpoints);
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3),
            "back to the config"
        );
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
