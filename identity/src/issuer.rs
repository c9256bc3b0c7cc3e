//! The current issuer, loaded from files and swapped when they change.
//!
//! Rotation is a file write: when the trust anchors, issuer certificate or issuer key
//! change, the triple is checked again and, if usable, replaces the current issuer.
//! Requests already signing keep the issuer they started with (an `Arc`), so nothing in
//! flight is dropped. A triple that does not check is refused and logged, and the last
//! good issuer stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Clock;
use crate::ca::Ca;
use crate::metrics::Metrics;
use crate::pki::PkiError;

/// Where the issuer's files are.
#[derive(Clone, Debug)]
pub struct IssuerFiles {
    /// The trust anchor bundle (PEM).
    pub trust_anchors: PathBuf,
    /// The issuer certificate (PEM), optionally followed by its own chain.
    pub issuer_cert: PathBuf,
    /// The issuer's PKCS#8 private key (PEM).
    pub issuer_key: PathBuf,
}

impl IssuerFiles {
    fn paths(&self) -> Vec<PathBuf> {
        vec![
            self.trust_anchors.clone(),
            self.issuer_cert.clone(),
            self.issuer_key.clone(),
        ]
    }
}

/// Why the issuer cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not UTF-8 PEM.
    #[error("{path} is not utf-8 text")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The triple does not check.
    #[error("issuer {cert} (key {key}, trust anchors {anchors}) is unusable")]
    Invalid {
        /// The issuer certificate file.
        cert: PathBuf,
        /// The issuer key file.
        key: PathBuf,
        /// The trust anchor file.
        anchors: PathBuf,
        /// What is wrong.
        #[source]
        source: Box<PkiError>,
    },
}

/// The current issuer, watched for changes.
#[derive(Debug)]
pub struct IssuerStore {
    current: watch::Receiver<Arc<Ca>>,
    poll: Option<JoinHandle<()>>,
}

impl Drop for IssuerStore {
    fn drop(&mut self) {
        if let Some(poll) = &self.poll {
            poll.abort();
        }
    }
}

impl IssuerStore {
    /// Loads the issuer, refusing one that is not signed by an anchor, is outside its
    /// validity, or whose key does not match. With `reload`, the files are polled at
    /// that interval and a changed, usable triple replaces the issuer.
    pub async fn load(
        files: IssuerFiles,
        reload: Option<Duration>,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, LoadError> {
        let contents = crate::reload::read_all(&files.paths())
            .await
            .map_err(|(path, source)| LoadError::Read { path, source })?;
        let ca = build(&files, &contents, &clock)?;
        log_loaded(&ca, "loaded issuer");
        metrics.set_issuer_expiry(ca.info().issuer_not_after);
        let (tx, current) = watch::channel(Arc::new(ca));
        let poll = reload.map(|interval| {
            let files2 = files.clone();
            crate::reload::spawn_poll(files.paths(), interval, contents, move |now| {
                match build(&files2, now, &clock) {
                    Ok(ca) => {
                        log_loaded(&ca, "rotated issuer");
                        metrics.set_issuer_expiry(ca.info().issuer_not_after);
                        metrics.reloaded(true);
                        tx.send_replace(Arc::new(ca));
                    }
                    Err(error) => {
                        metrics.reloaded(false);
                        tracing::error!(error = %crate::DisplayChain(&error), "keeping the previous issuer");
                    }
                }
            })
        });
        Ok(Self { current, poll })
    }

    /// The issuer to sign with now.
    pub fn current(&self) -> Arc<Ca> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every issuer swap.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Ca>> {
        self.current.clone()
    }
}

fn log_loaded(ca: &Ca, what: &str) {
    let info = ca.info();
    tracing::info!(
        issuer = %info.issuer_subject,
        expires = %humantime::format_rfc3339_seconds(info.issuer_not_after),
        "{what}"
    );
}

fn build(files: &IssuerFiles, contents: &[Vec<u8>], clock: &Clock) -> Result<Ca, LoadError> {
    let text = |i: usize, path: &PathBuf| {
        std::str::from_utf8(&contents[i]).map_err(|_| LoadError::NotText { path: path.clone() })
    };
    let anchors = text(0, &files.trust_anchors)?;
    let cert = text(1, &files.issuer_cert)?;
    let key = text(2, &files.issuer_key)?;
    Ca::load(anchors, cert, key, clock()).map_err(|source| LoadError::Invalid {
        cert: files.issuer_cert.clone(),
        key: files.issuer_key.clone(),
        anchors: files.trust_anchors.clone(),
        source: Box::new(source),
    })
}
