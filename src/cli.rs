//! Command-line interface. `serve` is the default subcommand, so `copilot-edge` alone runs the
//! agent on its embedded defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// copilot-edge: the Manufacturing Copilot on a plant-floor gateway.
#[derive(Debug, Parser)]
#[command(name = "copilot-edge", version, about, propagate_version = true)]
pub struct Cli {
    /// Config file (default: $CONFIGURATION_DIRECTORY/copilot-edge.toml if present, else the
    /// embedded defaults).
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Listen address, overriding `server.listen` (e.g. 127.0.0.1:0 for an ephemeral port).
    #[arg(long, global = true, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (the default).
    Serve,
    /// Validate a config file and print every problem with its key (exit 78 when invalid).
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
    /// Print the embedded default config as a commented TOML file.
    PrintDefaultConfig,
    /// Inspect the on-disk spool.
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
}

/// `spool` subcommands.
#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Backlog per sink, oldest record age and size (safe while the service runs).
    Status,
}
