//! End-to-end tests and benchmarks for linkerd-lite, with real processes.
//!
//! The library half is shared test support: polling assertions, the external
//! validator the tests run (`kubernetes-validate`), network-namespace pods, and the
//! whole demo mesh ([`shop`]) that both the end-to-end tests and the local demo
//! (`mesh-demo`) start. Other crates use it as a dev-dependency. The end-to-end tests
//! themselves live in `tests/`.
//!
//! # Layout
//!
//! - [`demo`]: the "shop" canary demo as local-mode YAML.
//! - [`kubeval`]: runs PyPI's `kubernetes-validate --strict`, bootstrapping a venv.
//! - [`netns`]: pods as network namespaces on a bridge, for interception tests.
//! - [`shop`]: the whole demo mesh in network namespaces, as tests and the demo use it.
//! - [`process`]: workspace binaries and child processes stopped on drop.
//! - [`assert_eventually!`]: polls a condition with a deadline.

pub mod demo;
pub mod kubeval;
pub mod netns;
pub mod process;
pub mod shop;

/// Polls `$cond` every 20 ms until it holds or `$timeout` passes, then panics with
/// the message. For conditions that depend on another process; logic that depends on
/// time alone is tested on tokio's paused clock instead.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $timeout:expr, $($msg:tt)+) => {{
        let deadline = ::std::time::Instant::now() + $timeout;
        loop {
            if $cond {
                break;
            }
            if ::std::time::Instant::now() > deadline {
                panic!($($msg)+);
            }
            ::std::thread::sleep(::std::time::Duration::from_millis(20));
        }
    }};
}
