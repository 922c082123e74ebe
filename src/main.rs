//! The `stsgate` binary: parse the command line, load the configuration (exit 78 naming the bad
//! key when it is unusable), run the command.

mod cli;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(e) => return fail(&format!("stsgate: {e}"), cli::EXIT_CONFIG),
    };
    match Box::pin(cli.run(config)).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(&format!("stsgate: {e:#}"), 1),
    }
}

#[allow(clippy::print_stderr)]
fn fail(message: &str, code: i32) -> std::process::ExitCode {
    eprintln!("{message}");
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
