//! The `mesh` binary: see the `mesh_cli` library for what each subcommand does.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    mesh_cli::Cli::parse().run().await
}
