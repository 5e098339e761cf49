//! Command-line parsing and exit codes: 0 done, 1 failed while running,
//! 2 bad usage or configuration.

use clap::{Parser, Subcommand};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

use kumulus_core::config::{Config, Mode};

#[derive(Parser)]
#[command(
    name = "kumulus",
    version,
    about = "Run a git repository as a job, with real elasticity"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform in one process on embedded backends
    /// (SQLite, a local folder, built-in users).
    Up {
        /// A TOML configuration file (then KUMULUS_* variables apply on top).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (overrides the configuration's `listen`).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Folder for data (overrides the configuration's `data_dir`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// The REST API (and the projector of status events) with production
    /// backends: MongoDB, Kafka, S3, OpenID Connect.
    Frontend {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// A worker with production backends: jobs from Kafka, files to S3.
    Worker {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The autoscaler with production backends.
    Autoscaler {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Read a password from standard input and print its argon2 hash, for
    /// `auth.users` in the configuration.
    HashPassword,
    /// Replay a trace through a scaling policy in a model of the system.
    Sim(crate::cmd::sim::SimArgs),
    /// Replay a trace against a running Kumulus (open loop) and report the
    /// live figures beside the simulator's.
    Load(crate::cmd::load::LoadArgs),
    /// Job history as a trace for `kumulus sim`.
    #[command(subcommand)]
    Trace(crate::cmd::trace::TraceCommand),
    /// Apply a worker count through the configured platform driver (within
    /// its bounds), or print the current one.
    Scale(crate::cmd::scale::ScaleArgs),
    /// Log in to a Kumulus and keep the token for the commands below.
    Login(crate::cmd::login::LoginArgs),
    /// Submit a job; with --wait, wait for it and exit with its exit code.
    Submit(crate::cmd::submit::SubmitArgs),
    /// Your jobs, newest first.
    Jobs(crate::cmd::jobs::JobsArgs),
    /// One job's state.
    Status(crate::cmd::status::StatusArgs),
    /// A job's stdout and stderr; -f follows it until it ends.
    Logs(crate::cmd::logs::LogsArgs),
    /// Download a job's files.
    Download(crate::cmd::download::DownloadArgs),
    /// Cancel a queued or running job.
    Cancel(crate::cmd::cancel::CancelArgs),
    /// Delete a job that has ended, with its files.
    Rm(crate::cmd::rm::RmArgs),
    /// A shell completion script.
    Completions(crate::cmd::completions::CompletionsArgs),
}

/// Runs a user's command against a Kumulus: its answer on stdout and its
/// exit code, or its error as one line on stderr with exit code 1.
fn user_command<F>(work: F) -> ExitCode
where
    F: std::future::Future<Output = Result<crate::cmd::remote::Outcome, String>>,
{
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(work) {
        Ok(out) => {
            if !out.text.is_empty() {
                println!("{}", out.text.trim_end_matches('\n'));
            }
            ExitCode::from(out.code)
        }
        Err(e) => {
            eprintln!("kumulus: {}", e.lines().next().unwrap_or_default());
            ExitCode::from(1)
        }
    }
}

/// Runs a client-side command to its end: its output on stdout, or its
/// error on stderr with exit code 1.
fn client_command<F>(work: F) -> ExitCode
where
    F: std::future::Future<Output = Result<String, String>>,
{
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(work) {
        Ok(out) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kumulus: {e}");
            ExitCode::from(1)
        }
    }
}

/// Loads the configuration or says why not (exit code 2).
fn load(mode: Mode, file: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(mode, file).map_err(|e| {
        eprintln!("kumulus: {e}");
        ExitCode::from(2)
    })
}

/// Runs a production service until Ctrl-C or SIGTERM.
fn run_service<F, Fut>(cfg: Config, service: F) -> ExitCode
where
    F: FnOnce(Config, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::up::UpError>>,
{
    init_tracing();
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        match service(cfg, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kumulus: {e}");
                ExitCode::from(1)
            }
        }
    })
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up {
            config,
            listen,
            data_dir,
        } => {
            let mut cfg = match load(Mode::Standalone, config.as_deref()) {
                Ok(cfg) => cfg,
                Err(code) => return code,
            };
            if let Some(listen) = listen {
                cfg.listen = listen;
            }
            if let Some(dir) = data_dir {
                cfg.data_dir = dir;
            }
            init_tracing();
            run_up(cfg)
        }
        Command::Frontend { config, listen } => match load(Mode::Production, config.as_deref()) {
            Ok(mut cfg) => {
                if let Some(listen) = listen {
                    cfg.listen = listen;
                }
                run_service(cfg, crate::services::frontend)
            }
            Err(code) => code,
        },
        Command::Worker { config } => match load(Mode::Production, config.as_deref()) {
            Ok(cfg) => run_service(cfg, crate::services::worker),
            Err(code) => code,
        },
        Command::Autoscaler { config } => match load(Mode::Production, config.as_deref()) {
            Ok(cfg) => run_service(cfg, crate::services::autoscaler),
            Err(code) => code,
        },
        Command::HashPassword => hash_password(),
        Command::Load(args) => client_command(crate::cmd::load::run(&args)),
        Command::Trace(cmd) => client_command(crate::cmd::trace::run(&cmd)),
        Command::Scale(args) => client_command(crate::cmd::scale::run(&args)),
        Command::Login(args) => user_command(crate::cmd::login::run(&args)),
        Command::Submit(args) => user_command(crate::cmd::submit::run(&args)),
        Command::Jobs(args) => user_command(crate::cmd::jobs::run(&args)),
        Command::Status(args) => user_command(crate::cmd::status::run(&args)),
        Command::Logs(args) => user_command(crate::cmd::logs::run(&args)),
        Command::Download(args) => user_command(crate::cmd::download::run(&args)),
        Command::Cancel(args) => user_command(crate::cmd::cancel::run(&args)),
        Command::Rm(args) => user_command(crate::cmd::rm::run(&args)),
        Command::Completions(args) => {
            use clap::CommandFactory;
            print!("{}", crate::cmd::completions::run(&args, Cli::command()));
            ExitCode::SUCCESS
        }
        Command::Sim(args) => match crate::cmd::sim::run(&args) {
            Ok(out) => {
                println!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kumulus sim: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KUMULUS_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hyper=warn,h2=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("kumulus: cannot start the runtime: {e}");
        ExitCode::from(1)
    })
}

fn run_up(cfg: Config) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let app = match crate::up::Standalone::build(cfg).await {
            Ok(app) => app,
            Err(crate::up::UpError::Config(e)) => {
                eprintln!("kumulus: {e}");
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("kumulus: {e}");
                return ExitCode::from(1);
            }
        };
        app.print_banner();
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        match app.run_until_stopped(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kumulus: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("stopping");
    shutdown.cancel();
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
        eprintln!("kumulus: cannot read the password: {e}");
        return ExitCode::from(1);
    }
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        eprintln!("kumulus: the password is empty; write it on standard input");
        return ExitCode::from(2);
    }
    match kumulus_embedded::users::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kumulus: {e}");
            ExitCode::from(1)
        }
    }
}
