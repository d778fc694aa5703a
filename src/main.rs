//! The `freeway` binary: parse the command line, run it, print an error once.

use clap::Parser;

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
