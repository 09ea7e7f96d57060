//! What each command of the `duehook` command line does; `main.rs` parses the command
//! line and calls one of these. Each returns the process's exit status.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, redact_url};

pub use crate::demo::DemoOptions;

/// `duehook serve`: see [`super::service::serve`].
pub async fn serve(config: Config) -> ExitCode {
    match super::service::serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duehook: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `duehook check-config`: a summary of the configuration loaded from `path` (no
/// secrets).
pub fn check_config(path: &Path, config: &Config) -> ExitCode {
    println!("configuration OK ({})", path.display());
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

/// `duehook demo`: built-in defaults (not the config file), warnings only in the log
/// unless RUST_LOG says otherwise, so the webhooks stand out.
pub async fn demo(opts: DemoOptions) -> ExitCode {
    let mut log = Config::defaults().log;
    log.level = "warn".into();
    super::telemetry::init(&log);
    match crate::demo::run(opts).await {
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
pub async fn migrate(url: &str) -> ExitCode {
    let fail = |e: crate::store::StoreError| {
        eprintln!("duehook: {e}");
        ExitCode::FAILURE
    };
    let store = match crate::store::Store::connect(url, 1).await {
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
        if let Err(e) = super::progress::with_progress(&label, store.migrate_to(m.version)).await {
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

/// `duehook copy-store`: the copy, then one line per verified table on stdout.
pub async fn copy_store(
    from: &str,
    to: &str,
    replace_target: bool,
    lease: chrono::TimeDelta,
) -> ExitCode {
    use crate::clock::Clock as _;
    use crate::store::copy::{CopyOptions, copy_store};
    eprintln!(
        "copy-store: from {} to {}",
        redact_url(from),
        redact_url(to)
    );
    let options = CopyOptions {
        replace_target,
        // Whether a PostgreSQL node is still alive is a question about real time.
        now: crate::clock::SystemClock.now(),
        lease,
    };
    match copy_store(from, to, &options, &mut std::io::stderr()).await {
        Ok(report) => {
            println!("{:<14} {:>10}  checksum", "table", "rows");
            for t in &report.tables {
                println!("{:<14} {:>10}  {}", t.table, t.rows, t.checksum);
            }
            println!(
                "copied and verified {} tables from {} to {}",
                report.tables.len(),
                redact_url(from),
                redact_url(to)
            );
            if report.sealed_secrets > 0 {
                println!(
                    "{} endpoint secret(s) are sealed: run the nodes on the target with the same [store] secret_key",
                    report.sealed_secrets
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) if e.is_refusal() => {
            eprintln!("duehook copy-store: refused: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("duehook copy-store: failed: {e}");
            ExitCode::FAILURE
        }
    }
}
