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
    /// The subcommand; none runs `serve`.
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
    /// Build the weekly health report from a Prometheus server's HTTP API.
    #[cfg(feature = "report")]
    Report(ReportArgs),
    /// Inspect the on-disk spool.
    Spool {
        #[command(subcommand)]
        /// What to do with the spool.
        command: SpoolCommand,
    },
    /// Measure answer quality on a labelled question file (tab-separated: split, subset,
    /// expected SOP id or NONE, equipment_id, question) with the configured knowledge base,
    /// lexicon and asset register: per-subset figures and a refusal-threshold sweep.
    Eval(EvalArgs),
    /// Knowledge bundles: pack, sign, verify, show, and roll back the gateway's.
    Kb {
        #[command(subcommand)]
        /// What to do.
        command: KbCommand,
    },
    /// Manage personal API tokens in the tokens file (`auth.tokens_file`, default
    /// `<state_dir>/tokens`); the running agent picks changes up within seconds.
    Token {
        #[command(subcommand)]
        /// What to do with the tokens file.
        command: TokenCommand,
    },
}

/// `kb` subcommands: knowledge bundles.
#[derive(Debug, Subcommand)]
pub enum KbCommand {
    #[cfg(feature = "publish")]
    /// Make an Ed25519 key pair: KEYFILE (private, mode 0600) and KEYFILE.pub; prints the
    /// public key for `kb.public_keys`.
    Keygen {
        /// Where to write the private key.
        key: PathBuf,
    },
    #[cfg(feature = "publish")]
    /// Pack DIR (knowledge/*.md, lexicon/*.toml, assets.csv|toml, bundle.toml) into one bundle;
    /// the knowledge must load and the smoke questions pass with this config's engine.
    #[command(disable_version_flag = true)]
    Pack {
        /// The directory.
        dir: PathBuf,
        /// The bundle file to write.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// The version (default: `version` of DIR/bundle.toml).
        #[arg(long, value_name = "VERSION")]
        version: Option<String>,
        /// Write the bundle even when its smoke questions fail here (gateways will refuse it).
        #[arg(long)]
        skip_smoke: bool,
    },
    #[cfg(feature = "publish")]
    /// Sign a bundle in place with a private key from `kb keygen`.
    Sign {
        /// The bundle file.
        file: PathBuf,
        /// The private key file.
        #[arg(long, value_name = "KEYFILE")]
        key: PathBuf,
    },
    /// Check a bundle as a gateway would: signature (against --public-key, else the config's
    /// `kb.public_keys`), every file's hash, the knowledge loading, the smoke questions.
    Verify {
        /// The bundle file.
        file: PathBuf,
        /// A base64 Ed25519 public key to accept (repeatable).
        #[arg(long = "public-key", value_name = "BASE64")]
        public_keys: Vec<String>,
    },
    /// Print a bundle's manifest: version, content hash, created, files, smoke, target, signers.
    Show {
        /// The bundle file (default: the gateway's current bundle in `kb.dir`).
        file: Option<PathBuf>,
    },
    /// Return to the previous good bundle in `kb.dir`; the running agent follows within
    /// seconds and does not take the rolled-back bundle again from its source.
    Rollback,
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for NAME, print it once, store only its SHA-256.
    Add {
        /// Who the token is for (1-64 of A-Z a-z 0-9 . _ -; no `:`); shows as user_id in the logs.
        name: String,
    },
    /// List the names in the tokens file (never the tokens).
    List,
    /// Remove NAME's token; requests with it are refused within seconds.
    Revoke {
        /// The name the token was added for.
        name: String,
    },
}

/// `eval` arguments.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The labelled question file.
    pub file: PathBuf,
    /// Which split to report: dev, heldout or all.
    #[arg(long, default_value = "all")]
    pub split: String,
    /// Refusal threshold to report at (default: the configured `engine.min_relevance`).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Also print the threshold sweep.
    #[arg(long)]
    pub sweep: bool,
    /// Also list the misses of the `dev` split (never of `heldout`).
    #[arg(long)]
    pub misses: bool,
    /// Also print every outcome of the `dev` split (never of `heldout`) as tab-separated lines:
    /// subset, expected, ranked, relevance, confidence, refusal, what the checks saw, question.
    #[arg(long)]
    pub outcomes: bool,
    /// Also print the reliability table of `confidence_score` (confidence band → share right).
    #[arg(long)]
    pub reliability: bool,
    /// Also print the ablation table: each engine part switched off in turn.
    #[arg(long)]
    pub ablate: bool,
}

/// `spool` subcommands.
#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Backlog per sink, oldest record age and size (safe while the service runs).
    Status,
}

/// Output format of `report`.
#[cfg(feature = "report")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// GitHub-flavoured Markdown, for chat and wikis.
    Markdown,
    /// One self-contained HTML file with inline SVG charts, for mail.
    Html,
}

/// `report` arguments.
#[cfg(feature = "report")]
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Prometheus base URL, e.g. http://127.0.0.1:9090
    #[arg(long)]
    pub prometheus: String,
    /// Any day of the week to report (the week runs Monday 00:00 UTC to the next Monday);
    /// default: the last complete week.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub week_of: Option<String>,
    /// Only this plant.
    #[arg(long)]
    pub plant: Option<String>,
    #[arg(long, value_enum, default_value = "markdown")]
    /// Output format.
    pub format: ReportFormat,
    /// Write here (atomically) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Weekly LLM budget in USD the cost figure is compared against.
    #[arg(long, default_value_t = 35.0)]
    pub weekly_budget_usd: f64,
    /// The agents' JSON log lines (log files, `journalctl -o cat`, or the MQTT log stream a
    /// central subscriber keeps): example questions for "Where SOPs are missing".
    #[arg(long, value_name = "FILE")]
    pub gaps_file: Option<PathBuf>,
}
