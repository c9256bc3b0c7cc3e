//! The `local` backend: a tokens file, reloaded when it changes.
//!
//! # Format
//!
//! One token per line: the token, whitespace, then `namespace/serviceaccount`. Blank
//! lines and lines starting with `#` are ignored.
//!
//! ```text
//! # token                      service account
//! 3f9c1d6e-web-token           shop/web
//! a7d2e410-api-token           shop/api
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use smi_crds::mesh::is_dns_label;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ReviewError, ServiceAccount, TokenReviewer};

/// Tokens are kept by their SHA-256, so lookups do not compare secrets byte by byte.
type TokenMap = HashMap<[u8; 32], ServiceAccount>;

/// Why a tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    /// The file cannot be read.
    #[error("cannot read tokens file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("tokens file {path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Tokens from a file, kept current by a background poll.
#[derive(Debug)]
pub struct LocalTokens {
    tokens: watch::Receiver<Arc<TokenMap>>,
    reload_failures: Arc<AtomicU64>,
    poll: Option<JoinHandle<()>>,
}

impl Drop for LocalTokens {
    fn drop(&mut self) {
        if let Some(poll) = &self.poll {
            poll.abort();
        }
    }
}

impl LocalTokens {
    /// Loads `path` and, when `reload` is set, re-reads it at that interval. A file that
    /// turns malformed is reported and the last good tokens are kept.
    pub async fn load(path: &Path, reload: Option<Duration>) -> Result<Self, TokensFileError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| TokensFileError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let map = parse(path, &bytes)?;
        tracing::info!(path = %path.display(), tokens = map.len(), "loaded tokens file");
        let (tx, tokens) = watch::channel(Arc::new(map));
        let reload_failures = Arc::new(AtomicU64::new(0));
        let failures = reload_failures.clone();
        let poll = reload.map(|interval| {
            let owned = path.to_path_buf();
            crate::reload::spawn_poll(vec![owned.clone()], interval, vec![bytes], move |now| {
                match parse(&owned, &now[0]) {
                    Ok(map) => {
                        tracing::info!(path = %owned.display(), tokens = map.len(), "reloaded tokens file");
                        tx.send_replace(Arc::new(map));
                    }
                    Err(error) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(%error, "keeping the previous tokens");
                    }
                }
            })
        });
        Ok(Self {
            tokens,
            reload_failures,
            poll,
        })
    }

    /// How many times a changed file was refused since loading.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// The service account of `token`, if the file lists it.
    pub fn lookup(&self, token: &str) -> Option<ServiceAccount> {
        let map = self.tokens.borrow();
        map.get(&digest(token.as_bytes())).cloned()
    }
}

impl TokenReviewer for LocalTokens {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<ServiceAccount, ReviewError>> {
        let result = self
            .lookup(token)
            .ok_or_else(|| ReviewError::Rejected("token is not in the tokens file".into()));
        Box::pin(std::future::ready(result))
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Parses a tokens file.
pub fn parse(
    path: &Path,
    bytes: &[u8],
) -> Result<HashMap<[u8; 32], ServiceAccount>, TokensFileError> {
    let err = |line: usize, reason: String| TokensFileError::Parse {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| err(0, "not utf-8".into()))?;
    let mut map = TokenMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let mut fields = raw.split_whitespace();
        let (Some(token), Some(sa), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(err(
                line,
                "expected `<token> <namespace>/<serviceaccount>`".into(),
            ));
        };
        let Some((namespace, name)) = sa.split_once('/') else {
            return Err(err(line, format!("{sa:?} is not namespace/serviceaccount")));
        };
        if !is_dns_label(namespace) || !is_dns_label(name) {
            return Err(err(
                line,
                format!("{sa:?} is not namespace/serviceaccount of DNS labels"),
            ));
        }
        let account = ServiceAccount {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        if map.insert(digest(token.as_bytes()), account).is_some() {
            return Err(err(line, "token listed twice".into()));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(ns: &str, name: &str) -> ServiceAccount {
        ServiceAccount {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn parses_lines_and_comments() {
        let map = parse(
            Path::new("tokens"),
            b"# comment\n\ntok-web   shop/web\n  tok-api\tshop/api  \n",
        )
        .unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&digest(b"tok-web")), Some(&sa("shop", "web")));
        assert_eq!(map.get(&digest(b"tok-api")), Some(&sa("shop", "api")));
    }

    #[test]
    fn reports_the_file_and_line() {
        for (text, line, needle) in [
            ("ok shop/web\nlonely\n", 2, "expected"),
            ("a shop/web extra\n", 1, "expected"),
            ("a shopweb\n", 1, "not namespace/serviceaccount"),
            ("a Shop/web\n", 1, "DNS labels"),
            ("a shop/web\na shop/api\n", 2, "twice"),
        ] {
            let err = parse(Path::new("/etc/tokens"), text.as_bytes()).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("tokens file /etc/tokens:{line}: ")),
                "{msg}"
            );
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[tokio::test]
    async fn reloads_on_change_and_keeps_the_last_good_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "t1 shop/web\n").unwrap();
        let tokens = LocalTokens::load(&path, Some(Duration::from_millis(20)))
            .await
            .unwrap();
        assert_eq!(tokens.lookup("t1"), Some(sa("shop", "web")));
        assert_eq!(tokens.lookup("t2"), None);

        std::fs::write(&path, "t2 shop/api\n").unwrap();
        let mut rx = tokens.tokens.clone();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tokens.lookup("t1"), None);
        assert_eq!(tokens.lookup("t2"), Some(sa("shop", "api")));

        // A malformed file is refused; the tokens stay.
        std::fs::write(&path, "garbage\nt3 x/y\n").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokens.reload_failures() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "malformed file not noticed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(tokens.lookup("t2"), Some(sa("shop", "api")));
        assert_eq!(tokens.lookup("t3"), None);
    }
}
