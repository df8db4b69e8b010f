//! The `llm-failover` command line.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Keeps LLM-backed applications answering when a model provider fails.
#[derive(Debug, Parser)]
#[command(name = "llm-failover", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Classify provider errors into failover reasons.
    ///
    /// With no flags, reads JSON Lines on stdin (fields, all optional: status, code, message,
    /// body, headers, provider) and writes one JSON line per input, in order: reason,
    /// retry_after_ms (when a wait is known) and matched (which rule decided). A malformed
    /// line yields {"error": "..."} and the run goes on. With flags, classifies one case.
    Classify(cli::classify::ClassifyArgs),
    /// Serve the OpenAI-compatible failover proxy described by a config file.
    Serve(cli::serve::ServeArgs),
    /// Check a config file and report every warning, without serving.
    Check(cli::serve::CheckArgs),
    /// Watch failover happen: simulated providers, the proxy, live traffic and /metrics.
    ///
    /// Needs no network, no keys and no config. A primary provider's host refuses
    /// connections for a while and then recovers; the screen shows each circuit breaker's
    /// state, where requests are served, and why they failed over. Ends by itself after
    /// --duration, or on Ctrl-C.
    Demo(cli::demo::DemoArgs),
    /// Steer a running proxy: breaker status, force-open, disable, metrics-only, reset, reload.
    ///
    /// Calls the proxy's admin endpoints. The URL comes from --url or LLM_FAILOVER_URL
    /// (default http://127.0.0.1:8080); the admin key from the environment variable
    /// LLM_FAILOVER_ADMIN_KEY (or the one --key-env names), never from a flag.
    Ctl(cli::ctl::CtlArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Classify(args) => cli::classify::run(args).map_err(cli::Failure::from),
        Command::Serve(args) => cli::serve::serve(args),
        Command::Check(args) => cli::serve::check(args),
        Command::Demo(args) => cli::demo::run(args),
        Command::Ctl(args) => cli::ctl::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(cli::Failure::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llm-failover: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
