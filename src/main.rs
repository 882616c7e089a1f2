//! The `copilot-edge` executable: CLI → config → logging → app, and exit codes
//! (0 clean stop, 1 runtime failure, 78 bad configuration).

use std::process::ExitCode;

use clap::Parser;
use copilot_edge::cli::{Cli, Command, SpoolCommand, TokenCommand};
use copilot_edge::config::{self, Environment};
#[cfg(feature = "report")]
use copilot_edge::report;
use copilot_edge::{app, auth};

/// EX_CONFIG from sysexits.h; the unit file sets `RestartPreventExitStatus=78`.
const EX_CONFIG: u8 = 78;

/// Writes command output to stdout. A reader that went away (`| head -1`) ends the command
/// quietly with exit 0, as Unix tools do; any other write error (a full disk) is reported once
/// and exits 1. Never a panic.
fn emit(text: &str) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("copilot-edge: cannot write output: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Environment::from_process();
    let config_path = cli
        .config
        .clone()
        .or_else(|| config::default_config_path(&env));
    match cli.command.unwrap_or(Command::Serve) {
        #[cfg(feature = "report")]
        Command::Report(args) => match report::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(report::ReportError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("report: {e}");
                ExitCode::FAILURE
            }
        },
        Command::PrintDefaultConfig => emit(config::DEFAULT_CONFIG_TOML),
        Command::CheckConfig { path } => {
            match config::load(Some(&path), &env).and_then(|c| app::preflight(&c).map(|_| c)) {
                Ok(c) => {
                    let sinks = copilot_edge::sinks::enabled(&c);
                    emit(&format!(
                        "{}: ok (listen {}, {} sink(s) enabled{})\n",
                        path.display(),
                        c.server.listen,
                        sinks.len(),
                        if sinks.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", sinks.join(", "))
                        }
                    ))
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(EX_CONFIG)
                }
            }
        }
        Command::Spool {
            command: SpoolCommand::Status,
        } => {
            let cfg = match config::load(config_path.as_deref(), &env) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            match copilot_edge::status::spool_status(&cfg) {
                Ok(text) => emit(&text),
                Err(e) => {
                    eprintln!("spool status: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Kb { command } => {
            let cfg = match config::load(config_path.as_deref(), &env) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            match copilot_edge::kb::commands::run(command, &cfg) {
                Ok(text) => emit(&text),
                Err(e) => {
                    eprintln!("kb: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token { command } => {
            // Plant IT runs this from a shell, without the service's environment: fall back to
            // the installed config so the tokens land in the file the service reads.
            let installed = std::path::Path::new("/etc/copilot-edge/copilot-edge.toml");
            let config_path =
                config_path.or_else(|| installed.exists().then(|| installed.to_path_buf()));
            let cfg = match config::load(config_path.as_deref(), &env) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            let file = &cfg.auth.tokens_file;
            let result = match command {
                TokenCommand::Add { name } => {
                    let now = copilot_edge::logging::rfc3339(std::time::SystemTime::now());
                    auth::add_token(file, &name, &now).map(|token| {
                        eprintln!(
                            "token for {name} stored as its SHA-256 in {}; it is shown only this once:",
                            file.display()
                        );
                        format!("{token}\n")
                    })
                }
                TokenCommand::List => auth::list_tokens(file).map(|list| {
                    if list.is_empty() {
                        eprintln!("no tokens in {}", file.display());
                    }
                    list.iter()
                        .map(|t| format!("{}\t{}\n", t.name, t.added.as_deref().unwrap_or("-")))
                        .collect()
                }),
                TokenCommand::Revoke { name } => auth::revoke_token(file, &name).map(|()| {
                    eprintln!("revoked {name} in {}", file.display());
                    String::new()
                }),
            };
            match result {
                Ok(text) => emit(&text),
                Err(e) => {
                    eprintln!("token: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Eval(args) => {
            let cfg = match config::load(config_path.as_deref(), &env) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            match app::eval(&cfg, &args) {
                Ok(text) => emit(&text),
                Err(e) => {
                    eprintln!("eval: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve => {
            let mut cfg = match config::load(config_path.as_deref(), &env) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            if let Some(addr) = cli.listen {
                cfg.server.listen = addr;
            }
            if let Err(e) = app::preflight(&cfg) {
                eprintln!("{e}");
                return ExitCode::from(EX_CONFIG);
            }
            match app::run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("copilot-edge: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
