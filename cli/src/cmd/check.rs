//! `mesh check`: verifies a cluster before installing, the installed control plane, and
//! (with `--proxy`) the meshed pods.
//!
//! ```text
//! mesh check --pre
//! mesh check
//! mesh check --proxy --wait 5m
//! ```

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use smi_crds::mesh;

use super::ClusterArgs;
use crate::check::{self, suite};
use crate::names;

/// Check that the cluster can run linkerd-lite, or that it is installed and healthy.
///
/// Prints one line per check (✓ passed, ‼ warning, × failed, with a hint) and exits 1
/// if any check failed. Warnings alone exit 0.
#[derive(Debug, clap::Args)]
pub struct Check {
    /// Run the pre-install checks: API access, Kubernetes version, permissions, and no
    /// previous installation.
    #[arg(long)]
    pre: bool,

    /// Also check the proxy of every meshed pod.
    #[arg(long, conflicts_with = "pre")]
    proxy: bool,

    /// Retry failed checks until they pass or this much time has passed, e.g. `5m`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    wait: Duration,

    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    output: CheckOutput,

    /// The control plane's namespace.
    #[arg(long, default_value = mesh::DEFAULT_CONTROL_PLANE_NS)]
    control_plane_namespace: String,

    #[command(flatten)]
    cluster: ClusterArgs,
}

/// How the report is printed.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
enum CheckOutput {
    /// One line per check, like `linkerd check`.
    #[default]
    Table,
    /// A JSON document.
    Json,
}

/// Time between tries with `--wait`.
const RETRY_INTERVAL: Duration = Duration::from_secs(5);

impl Check {
    /// Runs the checks and prints the report.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let Self {
            pre,
            proxy,
            wait,
            output,
            control_plane_namespace,
            cluster,
        } = self;
        let (report, tries) = check::retry_until(wait, RETRY_INTERVAL, || {
            let cluster = cluster.clone();
            let opts = suite::Options {
                pre,
                proxy,
                namespace: control_plane_namespace.clone(),
                version: names::VERSION.to_string(),
                now: SystemTime::now(),
            };
            async move { suite::run(cluster.client().await, &opts).await }
        })
        .await;
        if tries > 1 {
            eprintln!(
                "checked {tries} times over up to {}",
                humantime::format_duration(wait)
            );
        }
        let text = match output {
            CheckOutput::Table => report.to_text(),
            CheckOutput::Json => format!("{:#}\n", report.to_json()),
        };
        super::write_stdout(&text)?;
        Ok(if report.success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}
