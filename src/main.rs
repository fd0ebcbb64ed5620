//! `envelope-router`: wires roles and backends together from config and runs them.
//!
//! # Layout
//! * `config`: every flag and env var (`--help`).
//! * `telemetry`: logs (text or JSON) and the Prometheus recorder.
//! * `cloud_logging`: the JSON log format Cloud Logging reads (severity, trace).
//! * `backends`: builds every port from config (embedded or Redis).
//! * `instance`: the instance id (INSTANCE_ID, the metadata server, or random).
//! * `serve`: runs the roles until a signal.
//! * `dev_secret`: the development JWT secret kept in `DATA_DIR`.
//! * `token`: the `token` command (a dev token for curl and WebSocket clients).
//! * `shutdown`: SIGINT/SIGTERM.

mod backends;
mod cloud_logging;
mod config;
mod dev_secret;
mod instance;
mod serve;
mod shutdown;
mod telemetry;
mod token;

use clap::Parser;

/// mimalloc instead of glibc's malloc: allocation was ~13 % of the tokio workers' CPU under
/// load (per-request buffers, JSON, frames), see docs/performance-history.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::config::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init_logs(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(cli.global, *args).await,
            Command::IngestMqtt(mut args) => {
                args.roles = vec![config::Role::IngestMqtt];
                serve::run(cli.global, *args).await
            }
            Command::Token(args) => token::run(&cli.global, &args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
