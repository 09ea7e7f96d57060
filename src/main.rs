//! The `duehook` command line: a thin layer over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use duehook::config::Config;

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
        Command::Migrate => match duehook::store::Store::connect(&config.store.url, 1).await {
            Ok(store) => {
                let pending = store.pending_migrations().await.unwrap_or(usize::MAX);
                match store.migrate().await {
                    Ok(()) => {
                        if pending == usize::MAX {
                            println!("migrations applied");
                        } else {
                            println!("{pending} migration(s) applied");
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("duehook: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("duehook: {e}");
                ExitCode::FAILURE
            }
        },
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
    }
}

/// A store URL without its password.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
