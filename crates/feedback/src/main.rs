//! `feedback`: one binary for every component of the feedback pipeline.
//!
//! Every option can be given as a flag, as an environment variable (named in `--help`) or
//! in a TOML file passed with `--config` (keys are the long flag names without `--` of the
//! subcommand's options, e.g. `brokers = "127.0.0.1:9092"`, `batch-rows = 1000`; arrays for
//! repeatable options, booleans for flags). Precedence: flag > environment > file > default.
//! A key that is no option of the subcommand run, or a value the option cannot take, is
//! refused (exit 2) naming the file and the key: `feedback_runtime::config::apply_config_file`.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use feedback_runtime::shutdown::{Shutdown, DRAIN_TIMEOUT};
use feedback_runtime::{config, Common};
use feedback_tools::{bench, drill, erase, inspect, loadgen, probe, rollups, setup, watch};
#[cfg(test)]
mod config_tests;

use {
    feedback_attributor as attributor, feedback_board as board, feedback_collector as collector,
    feedback_sink as sink,
};

#[derive(Parser)]
#[command(
    name = "feedback",
    version,
    about = "Customer feedback to the teams who can act on it, live.",
    long_about = "Customer feedback to the teams who can act on it, live.\n\n\
Options can come from flags, from the environment variable shown with each, or from a TOML file \
given with --config / FEEDBACK_CONFIG whose keys are the long flag names of the subcommand's options \
(e.g. brokers = \"127.0.0.1:9092\", batch-rows = 1000; an unknown key is refused). \
Precedence: flag > environment > file > default."
)]
struct Cli {
    /// TOML file with option values (keys are the subcommand's long flag names without the
    /// leading --; an unknown key is refused).
    #[arg(long, global = true, env = "FEEDBACK_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the Kafka topics (idempotent).
    Topics(setup::TopicsArgs),
    /// Create or upgrade the ClickHouse schema (idempotent, versioned).
    Migrate(setup::MigrateArgs),
    /// HTTP collector: POST /v1/interactions and /v1/ratings → Kafka.
    Collector(collector::Args),
    /// Attribute every event to its team and join ratings to interactions.
    Attributor(attributor::Args),
    /// Land attributed events in ClickHouse in batches.
    Sink(sink::Args),
    /// Generate a realistic synthetic workload against the collector.
    Loadgen(loadgen::Args),
    /// Live per-team CSAT, NPS and CES in the terminal, from ClickHouse.
    Watch(watch::Args),
    /// Measure the time from a rating's 202 to its team's aggregate changing.
    Probe(probe::Args),
    /// Every team's live page, the JSON API over the metric views, and team alerts.
    Board(board::Args),
    /// Remove one customer's rows from ClickHouse (interactions, ratings, dead letters that
    /// mention them) and record the erasure in the `erasures` table.
    Erase(erase::Args),
    /// Rollups (the stored aggregates every page, panel and view reads): `rebuild` them
    /// from the raw rows, or compare them with the raw rows (`status`).
    Rollups(rollups::Args),
    /// Let raw rows expire after N days (whole months dropped; TTL where the server has it)
    /// while the rollups keep every day.
    Retention(rollups::RetentionArgs),
    /// Benchmarks: every stage beside the raw limits of Kafka and ClickHouse, in one run.
    Bench(bench::Args),
    /// Ownership files: `feedback ownership check`.
    Ownership {
        #[command(subcommand)]
        command: OwnershipCommand,
    },
    /// Explain how one event (collector JSON) is attributed: the decision, the ownership
    /// version, and every claim considered in order.
    Explain {
        /// The event as JSON, `@file` to read it from a file, or `-` for stdin.
        event: String,
        /// Directory holding one <team>.toml per team.
        #[arg(
            long,
            env = "FEEDBACK_OWNERSHIP_DIR",
            default_value = "deploy/ownership"
        )]
        ownership_dir: std::path::PathBuf,
    },
    /// Fault drill: a seeded workload through collector, attributor and sink while they
    /// are SIGKILLed and Kafka and ClickHouse restart; then every event is reconciled.
    /// Exits 1 on any difference.
    Drill(drill::Args),
}

#[derive(Subcommand)]
enum OwnershipCommand {
    /// Validate the ownership files; exits non-zero on errors.
    Check {
        /// Directory holding one <team>.toml per team.
        #[arg(
            long,
            env = "FEEDBACK_OWNERSHIP_DIR",
            default_value = "deploy/ownership"
        )]
        ownership_dir: std::path::PathBuf,
        /// Real events to test the files against: a file of collector JSON (an array, or
        /// one object per line), or `kafka:<topic>` to read the start of a topic. Prints
        /// each team's share and what nobody claims; equal-priority overlaps an event
        /// proves are errors.
        #[arg(long, env = "FEEDBACK_OWNERSHIP_SAMPLE")]
        sample: Option<String>,
        /// Most events read from a `kafka:` sample.
        #[arg(long, env = "FEEDBACK_OWNERSHIP_SAMPLE_MAX", default_value_t = 100_000)]
        sample_max: usize,
        #[command(flatten)]
        common: Common,
    },
}

/// The command tree with the `--config` file's values in place (see
/// [`config::apply_config_file`]), ready to parse `argv`.
fn command(argv: &[OsString]) -> Result<clap::Command, config::ConfigFileError> {
    config::apply_config_file(Cli::command(), argv)
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cmd = match command(&argv) {
        Ok(cmd) => cmd,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            return ExitCode::from(2);
        }
    };
    let cli = match cmd
        .try_get_matches_from(&argv)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        // Usage errors exit 2; --help and --version exit 0.
        Err(e) => e.exit(),
    };
    let _ = &cli.config;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FEEDBACK_LOG")
                .unwrap_or_else(|_| "info,rdkafka=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Past the drain deadline some work may still run (the attributor's thread inside a
    // blocking Kafka call): the process ends without waiting for it.
    rt.shutdown_background();
    code
}

async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    // Services: one shutdown for the process; they stop on Ctrl-C or SIGTERM and must be
    // done (with their /metrics servers) within DRAIN_TIMEOUT of it. Tools keep the
    // default signal handling (Ctrl-C ends them at once), so no handler is installed for them.
    match cmd {
        Command::Topics(a) => setup::topics(a).await?,
        Command::Migrate(a) => setup::migrate(a).await?,
        Command::Collector(a) => {
            let stop = Shutdown::on_signal();
            stop.drain(
                "the collector",
                DRAIN_TIMEOUT,
                collector::run(a, stop.clone()),
            )
            .await??
        }
        Command::Attributor(a) => {
            let stop = Shutdown::on_signal();
            stop.drain(
                "the attributor",
                DRAIN_TIMEOUT,
                attributor::run(a, stop.clone()),
            )
            .await??
        }
        Command::Sink(a) => {
            let stop = Shutdown::on_signal();
            stop.drain("the sink", DRAIN_TIMEOUT, sink::run(a, stop.clone()))
                .await??
        }
        Command::Loadgen(a) => loadgen::run(a).await?,
        Command::Watch(a) => watch::run(a).await?,
        Command::Probe(a) => probe::run(a).await?,
        Command::Board(a) => {
            let stop = Shutdown::on_signal();
            stop.drain("the board", DRAIN_TIMEOUT, board::run(a, stop.clone()))
                .await??
        }
        Command::Erase(a) => return erase::run(a).await,
        Command::Rollups(a) => rollups::run(a).await?,
        Command::Retention(a) => rollups::retention(a).await?,
        Command::Bench(a) => bench::run(a).await?,
        Command::Ownership {
            command:
                OwnershipCommand::Check {
                    ownership_dir,
                    sample,
                    sample_max,
                    common,
                },
        } => {
            return Ok(inspect::ownership_check(
                &ownership_dir,
                sample.as_deref(),
                sample_max,
                &common,
            ));
        }
        Command::Explain {
            event,
            ownership_dir,
        } => return Ok(inspect::explain_cmd(&ownership_dir, &event)),
        Command::Drill(a) => return drill::run(a).await,
    }
    Ok(ExitCode::SUCCESS)
}
