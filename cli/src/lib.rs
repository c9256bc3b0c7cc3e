//! The `mesh` command-line tool: installs the control plane, adds the proxy to workloads
//! offline, and checks a cluster.
//!
//! Output meant for `kubectl apply` goes to stdout; reports and errors go to stderr; the
//! exit code is 0 only on success.
//!
//! # Layout
//!
//! - [`cmd`]: one file per subcommand (`install`, `inject`, `uninject`, `check`): the
//!   flags and the glue.
//! - [`manifest`]: reading and writing multi-document YAML/JSON, keeping original text.
//! - [`patch`]: adding the proxy to pod templates and removing it, on JSON values.
//! - [`install`]: the control-plane objects `mesh install` renders, and its values.
//! - [`check`]: the checks `mesh check` runs, their report, and the Kubernetes glue.
//! - [`names`]: names of control-plane objects shared by all of the above.

pub mod check;
pub mod cmd;
pub mod install;
pub mod manifest;
pub mod names;
pub mod patch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The `mesh` command line.
#[derive(Debug, Parser)]
#[command(name = "mesh", version = names::VERSION, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Install(cmd::install::Install),
    Inject(cmd::inject::Inject),
    Uninject(cmd::uninject::Uninject),
    Check(cmd::check::Check),
}

impl Cli {
    /// Runs the chosen subcommand, printing any error to stderr.
    pub async fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Install(c) => c.run().await,
            Command::Inject(c) => c.run().await,
            Command::Uninject(c) => c.run().await,
            Command::Check(c) => c.run().await,
        };
        match result {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}
