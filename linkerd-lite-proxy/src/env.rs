//! The proxy's configuration, read from environment variables.
//!
//! This module is the one authoritative list of the variables the proxy reads. Every
//! variable carries the mesh-wide prefix [`PROXY_ENV_PREFIX`] (`LINKERD_LITE_PROXY_`);
//! the table below names them without it. Durations use humantime syntax (`500ms`,
//! `10s`, `2m`); port lists are comma-separated.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LOG` | `warn,linkerd_lite_proxy=info` | tracing filter |
//! | `CORES` | `1` | worker threads of the proxy's runtime |
//! | `OUTBOUND_LISTEN_ADDR` | `127.0.0.1:4140` | outbound listener |
//! | `INBOUND_LISTEN_ADDR` | `0.0.0.0:4143` | inbound listener |
//! | `ADMIN_LISTEN_ADDR` | `0.0.0.0:4191` | admin server (`/metrics`, `/ready`, `/live`, `/shutdown`, `/env.json`) |
//! | `DESTINATION_ADDR` | unset | `host:port` of the destination service; unset disables discovery |
//! | `DESTINATION_CONTEXT` | empty | context token sent with every lookup |
//! | `IDENTITY_ADDR` | unset | `host:port` (or `http://host:port`) of the identity service; unset disables mTLS |
//! | `IDENTITY_NAME` | required with `IDENTITY_ADDR` | this proxy's identity (DNS form) |
//! | `IDENTITY_TOKEN_FILE` | required with `IDENTITY_ADDR` | service-account token presented to the identity service |
//! | `IDENTITY_TRUST_ANCHORS` | required with `IDENTITY_ADDR` | PEM bundle of trust anchors |
//! | `IDENTITY_SVC_NAME` | unset | the identity service's own identity (`mesh inject` sets `linkerd-lite-identity.{cp-ns}.serviceaccount.identity.{cp-ns}.{trust-domain}`); when set the certify channel is TLS verified for that name, else plaintext (local mode only: `mesh install` runs identity with `--require-tls`) |
//! | `IDENTITY_DIR` | unset | an in-memory directory to also write the key and CSR to (debugging); unset keeps them in process memory only |
//! | `INBOUND_OPAQUE_PORTS` | `25,587,3306,4444,5432,6379,9300,11211` | inbound ports proxied as opaque TCP without detection |
//! | `OUTBOUND_OPAQUE_PORTS` | same as inbound | outbound ports proxied as opaque TCP without detection |
//! | `INBOUND_DEFAULT_POLICY` | `all-unauthenticated` | `all-unauthenticated`, `all-authenticated` or `deny`: applies when no inbound policy is known |
//! | `INBOUND_WORKLOAD` | unset | this pod as the policy service knows it, `{"ns":"<ns>","pod":"<pod>"}` or `<ns>:<pod>`; with `DESTINATION_ADDR`, enables per-port inbound policy (`InboundServerPolicies.WatchPort`) |
//! | `INBOUND_DEFAULT_PORT` | unset | local mode: application port for inbound connections that carry neither an original destination nor a transport header |
//! | `DETECT_TIMEOUT` | `10s` | protocol detection gives up and treats the stream as opaque |
//! | `CONNECT_TIMEOUT` | `1s` | connecting to an endpoint or the application |
//! | `HTTP_RESPONSE_TIMEOUT` | unset | a response's headers must arrive within it, else 504; an outbound policy rule's `timeouts.response` overrides it |
//! | `FAILFAST_TIMEOUT` | `3s` | how long a request waits for an endpoint before 503 (a policy backend's `queue.failfast_timeout` overrides it); also the longest a new target's first request waits for its policy and profile |
//! | `MAX_PENDING_REQUESTS` | `10000` | requests allowed to wait for an endpoint per target; more fail at once with 503 (a policy backend's `queue.capacity` overrides it) |
//! | `HEADER_READ_TIMEOUT` | `10s` | a client must send a request's headers within it (slowloris); an idle HTTP/1 keep-alive connection is closed after it |
//! | `HTTP2_IDLE_TIMEOUT` | `120s` | an HTTP/2 client connection with no request in progress for this long gets GOAWAY and is closed (idle or slow clients; streaming requests keep it open) |
//! | `MAX_HEADER_BYTES` | `65536` | largest request line plus headers accepted |
//! | `CACHE_IDLE_TIMEOUT` | `60s` | an unused target's discovery stream and balancer are dropped after it |
//! | `SHUTDOWN_GRACE_PERIOD` | `30s` | in-flight work allowed to finish after SIGTERM |
//! | `EWMA_DECAY` | `10s` | peak-EWMA decay window |
//! | `EWMA_DEFAULT_RTT` | `30ms` | peak-EWMA estimate of an endpoint with no samples |

use std::{collections::BTreeSet, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

pub use smi_crds::mesh::PROXY_ENV_PREFIX;
use smi_crds::mesh::ports;

/// Linkerd's default opaque ports: SMTP, MySQL, Galera, PostgreSQL, Redis,
/// Elasticsearch, memcached — protocols where the server speaks first.
pub const DEFAULT_OPAQUE_PORTS: &[u16] = &[25, 587, 3306, 4444, 5432, 6379, 9300, 11211];

/// Why the environment does not make a configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    /// A variable is set to a value that cannot be used.
    #[error("{var}={value:?}: {reason}")]
    Invalid {
        /// The full variable name.
        var: String,
        /// The value found.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A variable another one depends on is not set.
    #[error("{var} must be set when {because} is set")]
    Missing {
        /// The full name of the missing variable.
        var: String,
        /// The full name of the variable that requires it.
        because: String,
    },
}

/// What the inbound side allows when no policy says otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// Meshed and non-meshed clients alike.
    AllUnauthenticated,
    /// Only clients that presented a mesh identity over mTLS.
    AllAuthenticated,
    /// Nobody.
    Deny,
}

impl FromStr for DefaultPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all-unauthenticated" => Ok(Self::AllUnauthenticated),
            "all-authenticated" => Ok(Self::AllAuthenticated),
            "deny" => Ok(Self::Deny),
            _ => Err("expected all-unauthenticated, all-authenticated or deny".into()),
        }
    }
}

/// How the proxy obtains its workload certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    /// `host:port` of the identity service.
    pub addr: String,
    /// This proxy's identity, in DNS form.
    pub name: String,
    /// The service-account token file.
    pub token_file: PathBuf,
    /// PEM bundle of the trust anchors.
    pub trust_anchors_pem: String,
    /// The identity service's own identity, for a TLS certify channel.
    pub svc_name: Option<String>,
    /// In-memory directory to also write the key to.
    pub dir: Option<PathBuf>,
}

/// The whole proxy configuration. See the module docs for the variables.
#[derive(Clone, Debug)]
pub struct Config {
    /// Tracing filter directives.
    pub log: String,
    /// Runtime worker threads.
    pub cores: usize,
    /// Outbound listener address.
    pub outbound_addr: SocketAddr,
    /// Inbound listener address.
    pub inbound_addr: SocketAddr,
    /// Admin server address.
    pub admin_addr: SocketAddr,
    /// Destination service address; `None` disables discovery.
    pub destination_addr: Option<String>,
    /// Context token sent with lookups.
    pub destination_context: String,
    /// mTLS identity; `None` runs without mTLS.
    pub identity: Option<IdentityConfig>,
    /// Inbound ports that skip protocol detection.
    pub inbound_opaque_ports: BTreeSet<u16>,
    /// Outbound ports that skip protocol detection.
    pub outbound_opaque_ports: BTreeSet<u16>,
    /// Inbound policy when nothing more specific applies.
    pub default_policy: DefaultPolicy,
    /// The workload name for inbound policy lookups.
    pub inbound_workload: Option<String>,
    /// Local mode: inbound application port when the connection names none.
    pub inbound_default_port: Option<u16>,
    /// Protocol detection timeout.
    pub detect_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response-headers timeout.
    pub response_timeout: Option<Duration>,
    /// How long a request waits for an endpoint.
    pub failfast_timeout: Duration,
    /// Bound on requests waiting for an endpoint, per target.
    pub max_pending_requests: usize,
    /// Deadline for a client to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long an HTTP/2 client connection may carry no request.
    pub http2_idle_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Idle time after which a target's discovery and balancer are dropped.
    pub cache_idle_timeout: Duration,
    /// Grace period for in-flight work at shutdown.
    pub shutdown_grace_period: Duration,
    /// Peak-EWMA decay window.
    pub ewma_decay: Duration,
    /// Peak-EWMA default RTT.
    pub ewma_default_rtt: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            log: "warn,linkerd_lite_proxy=info".into(),
            cores: 1,
            outbound_addr: SocketAddr::from(([127, 0, 0, 1], ports::PROXY_OUTBOUND)),
            inbound_addr: SocketAddr::from(([0, 0, 0, 0], ports::PROXY_INBOUND)),
            admin_addr: SocketAddr::from(([0, 0, 0, 0], ports::PROXY_ADMIN)),
            destination_addr: None,
            destination_context: String::new(),
            identity: None,
            inbound_opaque_ports: DEFAULT_OPAQUE_PORTS.iter().copied().collect(),
            outbound_opaque_ports: DEFAULT_OPAQUE_PORTS.iter().copied().collect(),
            default_policy: DefaultPolicy::AllUnauthenticated,
            inbound_workload: None,
            inbound_default_port: None,
            detect_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(1),
            response_timeout: None,
            failfast_timeout: Duration::from_secs(3),
            max_pending_requests: 10_000,
            header_read_timeout: Duration::from_secs(10),
            http2_idle_timeout: Duration::from_secs(120),
            max_header_bytes: 64 * 1024,
            cache_idle_timeout: Duration::from_secs(60),
            shutdown_grace_period: Duration::from_secs(30),
            ewma_decay: Duration::from_secs(10),
            ewma_default_rtt: Duration::from_millis(30),
        }
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, which maps a full variable name to its
    /// value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let env = Env { lookup: &lookup };
        let d = Self::default();
        let identity = match env.get("IDENTITY_ADDR") {
            None => None,
            Some(addr) => Some(IdentityConfig {
                addr,
                name: env.require("IDENTITY_NAME", "IDENTITY_ADDR")?,
                token_file: env.require("IDENTITY_TOKEN_FILE", "IDENTITY_ADDR")?.into(),
                trust_anchors_pem: env.require("IDENTITY_TRUST_ANCHORS", "IDENTITY_ADDR")?,
                svc_name: env.get("IDENTITY_SVC_NAME"),
                dir: env.get("IDENTITY_DIR").map(PathBuf::from),
            }),
        };
        Ok(Self {
            log: env.get("LOG").unwrap_or(d.log),
            cores: match env.parse::<usize>("CORES")? {
                Some(0) => return Err(Env::invalid("CORES", "0", "must be at least 1")),
                Some(n) => n,
                None => d.cores,
            },
            outbound_addr: env
                .parse("OUTBOUND_LISTEN_ADDR")?
                .unwrap_or(d.outbound_addr),
            inbound_addr: env.parse("INBOUND_LISTEN_ADDR")?.unwrap_or(d.inbound_addr),
            admin_addr: env.parse("ADMIN_LISTEN_ADDR")?.unwrap_or(d.admin_addr),
            destination_addr: env.get("DESTINATION_ADDR"),
            destination_context: env.get("DESTINATION_CONTEXT").unwrap_or_default(),
            identity,
            inbound_opaque_ports: env
                .ports("INBOUND_OPAQUE_PORTS")?
                .unwrap_or(d.inbound_opaque_ports),
            outbound_opaque_ports: env
                .ports("OUTBOUND_OPAQUE_PORTS")?
                .unwrap_or(d.outbound_opaque_ports),
            default_policy: env
                .parse("INBOUND_DEFAULT_POLICY")?
                .unwrap_or(d.default_policy),
            inbound_workload: env.get("INBOUND_WORKLOAD"),
            inbound_default_port: env.parse("INBOUND_DEFAULT_PORT")?,
            detect_timeout: env.duration("DETECT_TIMEOUT")?.unwrap_or(d.detect_timeout),
            connect_timeout: env
                .duration("CONNECT_TIMEOUT")?
                .unwrap_or(d.connect_timeout),
            response_timeout: env.duration("HTTP_RESPONSE_TIMEOUT")?,
            failfast_timeout: env
                .duration("FAILFAST_TIMEOUT")?
                .unwrap_or(d.failfast_timeout),
            max_pending_requests: env
                .parse("MAX_PENDING_REQUESTS")?
                .unwrap_or(d.max_pending_requests),
            header_read_timeout: env
                .duration("HEADER_READ_TIMEOUT")?
                .unwrap_or(d.header_read_timeout),
            http2_idle_timeout: env
                .positive_duration("HTTP2_IDLE_TIMEOUT")?
                .unwrap_or(d.http2_idle_timeout),
            max_header_bytes: env.parse("MAX_HEADER_BYTES")?.unwrap_or(d.max_header_bytes),
            cache_idle_timeout: env
                .duration("CACHE_IDLE_TIMEOUT")?
                .unwrap_or(d.cache_idle_timeout),
            shutdown_grace_period: env
                .duration("SHUTDOWN_GRACE_PERIOD")?
                .unwrap_or(d.shutdown_grace_period),
            ewma_decay: env.duration("EWMA_DECAY")?.unwrap_or(d.ewma_decay),
            ewma_default_rtt: env
                .duration("EWMA_DEFAULT_RTT")?
                .unwrap_or(d.ewma_default_rtt),
        })
    }
}

/// Only the admin server's address (`ADMIN_LISTEN_ADDR`), read through `lookup`;
/// for `await-ready`, which needs nothing else.
pub fn admin_addr(lookup: impl Fn(&str) -> Option<String>) -> Result<SocketAddr, EnvError> {
    let env = Env { lookup: &lookup };
    Ok(env
        .parse("ADMIN_LISTEN_ADDR")?
        .unwrap_or(Config::default().admin_addr))
}

/// Every variable with the proxy's prefix in the process environment, sorted, for the
/// admin server's dump.
pub fn dump_env() -> Vec<(String, String)> {
    let mut vars: Vec<_> = std::env::vars()
        .filter(|(k, _)| k.starts_with(PROXY_ENV_PREFIX))
        .collect();
    vars.sort();
    vars
}

struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Env<'_> {
    fn name(short: &str) -> String {
        format!("{PROXY_ENV_PREFIX}{short}")
    }

    /// A set, non-empty value.
    fn get(&self, short: &str) -> Option<String> {
        (self.lookup)(&Self::name(short)).filter(|v| !v.trim().is_empty())
    }

    fn require(&self, short: &str, because: &str) -> Result<String, EnvError> {
        self.get(short).ok_or_else(|| EnvError::Missing {
            var: Self::name(short),
            because: Self::name(because),
        })
    }

    fn invalid(short: &str, value: &str, reason: impl ToString) -> EnvError {
        EnvError::Invalid {
            var: Self::name(short),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }

    fn parse<T: FromStr>(&self, short: &str) -> Result<Option<T>, EnvError>
    where
        T::Err: ToString,
    {
        self.get(short)
            .map(|v| v.trim().parse().map_err(|e| Self::invalid(short, &v, e)))
            .transpose()
    }

    fn duration(&self, short: &str) -> Result<Option<Duration>, EnvError> {
        self.get(short)
            .map(|v| humantime::parse_duration(v.trim()).map_err(|e| Self::invalid(short, &v, e)))
            .transpose()
    }

    fn positive_duration(&self, short: &str) -> Result<Option<Duration>, EnvError> {
        match self.duration(short)? {
            Some(d) if d.is_zero() => {
                let v = self.get(short).unwrap_or_default();
                Err(Self::invalid(short, &v, "must be longer than zero"))
            }
            d => Ok(d),
        }
    }

    fn ports(&self, short: &str) -> Result<Option<BTreeSet<u16>>, EnvError> {
        let Some(v) = (self.lookup)(&Self::name(short)) else {
            return Ok(None);
        };
        parse_ports(&v)
            .map(Some)
            .map_err(|e| Self::invalid(short, &v, e))
    }
}

/// Parses a comma-separated list of ports and `low-high` ranges; an empty string is the
/// empty set.
pub fn parse_ports(s: &str) -> Result<BTreeSet<u16>, String> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
                Ok(n) => Ok(n),
            }
        };
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(format!("range {part:?} is reversed"));
                }
                out.extend(lo..=hi);
            }
            None => {
                out.insert(port(part)?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, EnvError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (format!("{PROXY_ENV_PREFIX}{k}"), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_linkerd_ports() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.outbound_addr.to_string(), "127.0.0.1:4140");
        assert_eq!(c.inbound_addr.to_string(), "0.0.0.0:4143");
        assert_eq!(c.admin_addr.port(), 4191);
        assert!(c.inbound_opaque_ports.contains(&3306));
        assert!(c.identity.is_none());
        assert_eq!(c.default_policy, DefaultPolicy::AllUnauthenticated);
    }

    #[test]
    fn values_are_parsed() {
        let c = cfg(&[
            ("DETECT_TIMEOUT", "250ms"),
            ("HTTP2_IDLE_TIMEOUT", "5m"),
            ("INBOUND_OPAQUE_PORTS", "25, 8000-8002"),
            ("OUTBOUND_OPAQUE_PORTS", ""),
            ("INBOUND_DEFAULT_POLICY", "deny"),
            ("DESTINATION_ADDR", "127.0.0.1:8086"),
        ])
        .unwrap();
        assert_eq!(c.detect_timeout, Duration::from_millis(250));
        assert_eq!(c.http2_idle_timeout, Duration::from_secs(300));
        assert_eq!(
            c.inbound_opaque_ports.into_iter().collect::<Vec<_>>(),
            vec![25, 8000, 8001, 8002]
        );
        assert!(c.outbound_opaque_ports.is_empty());
        assert_eq!(c.default_policy, DefaultPolicy::Deny);
        assert_eq!(c.destination_addr.as_deref(), Some("127.0.0.1:8086"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = cfg(&[("DETECT_TIMEOUT", "soon")]).unwrap_err().to_string();
        assert!(
            err.starts_with("LINKERD_LITE_PROXY_DETECT_TIMEOUT=\"soon\""),
            "{err}"
        );
        let err = cfg(&[("INBOUND_LISTEN_ADDR", "nowhere")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("LINKERD_LITE_PROXY_INBOUND_LISTEN_ADDR"),
            "{err}"
        );
        let err = cfg(&[("HTTP2_IDLE_TIMEOUT", "0s")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "LINKERD_LITE_PROXY_HTTP2_IDLE_TIMEOUT=\"0s\": must be longer than zero"
        );
        let err = cfg(&[("INBOUND_OPAQUE_PORTS", "25,70000")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"70000\" is not a port"), "{err}");
        let err = cfg(&[("IDENTITY_ADDR", "127.0.0.1:8080")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "LINKERD_LITE_PROXY_IDENTITY_NAME must be set when LINKERD_LITE_PROXY_IDENTITY_ADDR is set"
        );
    }
}
