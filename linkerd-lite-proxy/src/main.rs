//! The `linkerd-lite-proxy` binary: the sidecar proxy, and its `init` step.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
