//! `mesh uninject`: removes exactly what `mesh inject` added.
//!
//! ```text
//! kubectl get deploy -o yaml | mesh uninject - | kubectl apply -f -
//! ```

use std::process::ExitCode;

use crate::manifest::{self, OutputFormat};
use crate::patch;

/// Remove the linkerd-lite proxy from the workloads in a manifest.
///
/// Takes away the proxy, its init step, volumes, annotations and label, and the inject
/// annotation from namespaces. Everything else is passed through unchanged.
#[derive(Debug, clap::Args)]
pub struct Uninject {
    /// A file, a directory (read recursively), or `-` for stdin.
    input: String,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: OutputFormat,
}

impl Uninject {
    /// Reads the input, uninjects, and prints the result.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let docs = manifest::read_input(&self.input)?;
        let result = super::transform(&docs, self.output, patch::uninject)?;
        super::emit(&result)?;
        Ok(ExitCode::SUCCESS)
    }
}
