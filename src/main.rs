//! The `freeway` binary: parse the command line, run it, print an error once.

use clap::Parser;

/// mimalloc: a request allocates many small short-lived objects; the system allocator spent
/// about a fifth of Freeway's CPU on them under load (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = freeway::cli::Cli::parse();
    match freeway::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
