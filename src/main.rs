//! The `duehook` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use duehook::config::{Config, redact_url};

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
        return demo(duehook::demo::DemoOptions::new(days, step_seconds, fast)).await;
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    duehook::telemetry::init(&config.log);
    match cli.command {
        Command::Serve => match duehook::service::serve(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("duehook: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Migrate => migrate(&config.store.url).await,
        Command::CheckConfig => {
            println!("configuration OK ({})", cli.config.display());
            println!("  listen:  {}", config.server.listen);
            println!("  store:   {}", redact_url(&config.store.url));
            println!("  clock:   {:?}", config.clock.mode);
            println!(
                "  tokens:  {} (admin: {})",
                config.auth.tokens.len(),
                config
                    .auth
                    .admin_tokens
                    .as_ref()
                    .map_or("same as tokens".to_string(), |t| t.len().to_string())
            );
            ExitCode::SUCCESS
        }
        Command::Demo { .. } => unreachable!("handled before the configuration is loaded"),
    }
}

/// `duehook demo`: built-in defaults (not the config file), warnings only in the log
/// unless RUST_LOG says otherwise, so the webhooks stand out.
async fn demo(opts: duehook::demo::DemoOptions) -> ExitCode {
    let mut log = Config::defaults().log;
    log.level = "warn".into();
    duehook::telemetry::init(&log);
    match duehook::demo::run(opts).await {
        Ok(summary) if summary.ok() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("duehook demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `duehook migrate`: applies the pending migrations one by one, naming each (stdout),
/// with a progress line on stderr while one takes long, then the count.
async fn migrate(url: &str) -> ExitCode {
    let fail = |e: duehook::store::StoreError| {
        eprintln!("duehook: {e}");
        ExitCode::FAILURE
    };
    let store = match duehook::store::Store::connect(url, 1).await {
        Ok(store) => store,
        Err(e) => return fail(e),
    };
    let pending = match store.pending_migration_list().await {
        Ok(pending) => pending,
        Err(e) => return fail(e),
    };
    if pending.is_empty() {
        println!(
            "store is up to date: no pending migrations ({})",
            redact_url(url)
        );
        store.close().await;
        return ExitCode::SUCCESS;
    }
    println!(
        "{} pending migration(s) for {}",
        pending.len(),
        redact_url(url)
    );
    for (i, m) in pending.iter().enumerate() {
        println!(
            "applying {}/{}: {} {}",
            i + 1,
            pending.len(),
            m.version,
            m.description
        );
        let label = format!("migration {} {}", m.version, m.description);
        if let Err(e) = duehook::progress::with_progress(&label, store.migrate_to(m.version)).await
        {
            eprintln!(
                "duehook: migration {} {} failed: {e}",
                m.version, m.description
            );
            println!(
                "{i} of {} migration(s) applied before the failure",
                pending.len()
            );
            store.close().await;
            return ExitCode::FAILURE;
        }
    }
    println!("{} migration(s) applied", pending.len());
    store.close().await;
    ExitCode::SUCCESS
}
