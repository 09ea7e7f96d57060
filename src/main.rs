//! The `duehook` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use duehook::commands;
use duehook::config::Config;

/// mimalloc: per-thread free lists and no global arena lock. Every request and every
/// webhook allocates (JSON, headers, bodies), across the HTTP runtime, the writer and the
/// delivery tasks; with glibc's malloc those allocations take a large share of the CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "duehook",
    version,
    about = "Scheduler, reminder engine and signed webhook sender"
)]
struct Cli {
    /// Config file (TOML). Missing is fine for the default path: built-in defaults apply.
    #[arg(
        long,
        short,
        global = true,
        default_value = "config.toml",
        env = "DUEHOOK_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: migrate the store, serve the API, fire timers and deliver webhooks
    /// until SIGTERM/SIGINT.
    Serve,
    /// Apply pending store migrations and exit.
    Migrate,
    /// Load and validate the configuration, print a summary (no secrets) and exit.
    CheckConfig,
    /// Copy a whole store into another one (SQLite to PostgreSQL, or back) with the
    /// service stopped, and verify the copy.
    #[command(long_about = COPY_STORE_HELP)]
    CopyStore {
        /// The store to copy (sqlite://PATH or postgres://…); it is only read, after
        /// being migrated to this binary's version.
        #[arg(long, value_name = "URL")]
        from: String,
        /// The store to copy into; created (SQLite) or migrated as needed.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Delete every row the target holds before copying (a target that is not
        /// empty is refused otherwise).
        #[arg(long)]
        replace_target: bool,
    },
    /// Live through three days of reservations, check-outs and an invoice in about 30
    /// seconds: a throw-away service on a manual clock sends its webhooks to a built-in
    /// receiver that verifies every signature, then a summary compares them with what
    /// the rules call for. Exits non-zero on any difference. Ignores --config.
    Demo {
        /// Simulated days to live through (1 to 14).
        #[arg(long, default_value_t = 3)]
        days: u32,
        /// Simulated seconds per clock advance (60 to 86400).
        #[arg(long, default_value_t = 3600)]
        step_seconds: u32,
        /// Do not pause between advances (about ten real seconds per simulated day
        /// otherwise).
        #[arg(long)]
        fast: bool,
    },
}

fn load(cli: &Cli) -> Result<Config, ExitCode> {
    let explicit = cli.config.as_path() != std::path::Path::new("config.toml");
    Config::load(&cli.config, explicit).map_err(|e| {
        eprintln!("duehook: configuration error: {e}");
        ExitCode::from(2)
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Demo {
        days,
        step_seconds,
        fast,
    } = cli.command
    {
        return commands::demo(commands::DemoOptions::new(days, step_seconds, fast)).await;
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut log = config.log.clone();
    if matches!(cli.command, Command::CopyStore { .. }) {
        // A copy reads each table in one long statement: sqlx's slow-statement
        // warnings would only be noise among the progress lines.
        log.level = format!("{},sqlx::query=error", log.level);
    }
    duehook::init_logging(&log);
    match cli.command {
        Command::Serve => commands::serve(config).await,
        Command::Migrate => commands::migrate(&config.store.url).await,
        Command::CheckConfig => commands::check_config(&cli.config, &config),
        Command::CopyStore {
            ref from,
            ref to,
            replace_target,
        } => commands::copy_store(from, to, replace_target, config.cluster.lease).await,
        Command::Demo { .. } => unreachable!("handled before the configuration is loaded"),
    }
}

const COPY_STORE_HELP: &str = "\
Copy a whole store into another one with the service stopped, and verify the copy: \
SQLite to PostgreSQL when one node becomes several, PostgreSQL to SQLite for a restore \
drill.

Copied as stored: reservations, orders, unit rentals, invoices, items and contacts; \
timers with their states and reasons (the digest chain included); events with their \
sequence numbers; deliveries (a pending one stays pending under its event id, so its \
webhook-id does not change); attempts; endpoints with their secrets as stored (sealed \
secrets are not opened: run the new nodes with the same [store] secret_key); alerts. \
Keys and autoincrement positions are kept. Not copied: the nodes table (the new nodes \
register themselves; the target's own rows stay as they are) and timer and delivery \
claims (cleared: the new nodes claim afresh).

Both stores are first migrated to this binary's version; a store with migrations this \
binary does not know is refused. A store a service is running on is refused: a SQLite \
file whose lock another process holds, a PostgreSQL store with a node that has not \
stopped and was seen within [cluster] lease (read from --config) of now, or with \
timers claimed under a lease that has not run out. A target whose tables hold rows is \
refused unless --replace-target is given. A service started on either store while the \
copy runs cannot start (SQLite) or waits for it to end (PostgreSQL).

The target is written in one transaction, committed only after every table verified \
(row count and a checksum of the rows, equal on both sides, printed per table): an \
interrupted or failed copy leaves the target as it was, and running the same command \
again starts over. Progress goes to stderr, the verified tables to stdout.

Exit status: 0 copied and verified; 1 failed (nothing committed); 2 configuration \
error; 3 refused (nothing copied; the migrations may have been applied).";
