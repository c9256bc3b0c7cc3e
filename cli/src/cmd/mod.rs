//! One file per subcommand, each a clap `Args` struct with a `run(self)`.
//!
//! Shared here: the pipeline that parses manifests, changes each document and prints the
//! result only when every document succeeded, and the cluster-access flags.

pub mod check;
pub mod inject;
pub mod install;
pub mod uninject;

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

use crate::manifest::{self, Document, OutputDoc, OutputFormat};
use crate::patch::{PatchError, Report};

/// How to reach the cluster: kubeconfig file and context.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClusterArgs {
    /// The kubeconfig file to use (default: $KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// A Kubernetes client for these settings.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        crate::check::kube_client(self.kubeconfig.as_deref(), self.context.as_deref()).await
    }
}

/// The result of changing a set of documents: the text for stdout and one report per
/// object, or every error found.
#[derive(Debug)]
pub struct Transformed {
    /// What to print on stdout.
    pub output: String,
    /// One line per object, for stderr.
    pub reports: Vec<Report>,
}

/// Applies `f` to every document. A document `f` leaves equal to its input keeps its
/// original text. Any error fails the whole run, so nothing half-done reaches stdout.
pub fn transform(
    docs: &[Document],
    format: OutputFormat,
    mut f: impl FnMut(&mut Value) -> Result<Vec<Report>, PatchError>,
) -> anyhow::Result<Transformed> {
    let mut out = Vec::with_capacity(docs.len());
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for doc in docs {
        let mut value = doc.value.clone();
        match f(&mut value) {
            Ok(r) => {
                reports.extend(r);
                let changed = (value != doc.value).then_some(value);
                out.push(OutputDoc { doc, changed });
            }
            Err(e) => errors.push(format!("{}: document {}: {e}", doc.source_name, doc.index)),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("\n"));
    }
    let output = manifest::render(&out, format)?;
    Ok(Transformed { output, reports })
}

/// Prints the reports to stderr and the output to stdout.
pub fn emit(t: &Transformed) -> anyhow::Result<()> {
    let mut err = std::io::stderr().lock();
    for r in &t.reports {
        writeln!(err, "{r}").context("cannot write to stderr")?;
    }
    write_stdout(&t.output)
}

/// Writes text to stdout in one go.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}
