//! The `freeway` binary: parse the command line, run it, print an error once.

use clap::Parser;

use std::io::Write;

fn main() -> std::process::ExitCode {
    let cli = freeway::cli::Cli::parse();
    match freeway::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader went away (`freeway models | head`): nothing more to say to it.
        Err(e) if broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
