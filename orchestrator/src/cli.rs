//! Command-line interface (clap derive).
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "vbuild",
    version = crate::VERSION,
    about = "Hermetic, content-addressed builds for JS/TS monorepos"
)]
pub struct Cli {
    /// Run as if started in this directory.
    #[arg(short = 'C', global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Build targets and everything they depend on.
    Run(RunArgs),
    /// Explain whether targets would hit the cache (local, then remote),
    /// and if not, why; runs and restores nothing.
    Why(WhyArgs),
    /// List targets matching patterns (default //...).
    Query {
        patterns: Vec<String>,
        /// label: one label per line; json: targets with their deps;
        /// dot: a Graphviz graph (edges from a target to its deps).
        #[arg(long, value_enum, default_value = "label")]
        output: QueryOutput,
    },
    /// Print a shell completion script (e.g. `vbuild completions bash > /etc/bash_completion.d/vbuild`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the JSON Schemas of vbuild.toml, BUILD.toml and the --json
    /// events into DIR (for editors: `#:schema` comments, taplo).
    Schema {
        /// Where to write them (created if missing); default
        /// `.vbuild/schema` at the workspace root (or here, outside one).
        dir: Option<PathBuf>,
    },
    /// Remove this workspace's entries from the action cache (entries a
    /// copy of it at another path also built stay).
    Clean,
    /// Talk to the runner from inside an action (no-ops outside vbuild).
    Tool {
        #[command(subcommand)]
        command: ToolCmd,
    },
    /// Write vbuild.toml and BUILD.toml files for an npm/pnpm/yarn
    /// workspace (run at its root); see docs/migrate.md.
    Migrate {
        /// Print the files instead of writing them.
        #[arg(long)]
        dry_run: bool,
        /// Overwrite existing vbuild.toml / BUILD.toml files.
        #[arg(long)]
        force: bool,
    },
    /// Inspect the store.
    Store {
        #[command(subcommand)]
        command: StoreCmd,
    },
    /// The remote cache (docs/remote-cache.md).
    Remote {
        #[command(subcommand)]
        command: RemoteCmd,
    },
}

#[derive(Subcommand, Debug)]
pub enum RemoteCmd {
    /// Print what the remote supports and whether reads and writes work.
    Check(RemoteArgs),
}

/// Overrides of `[remote]` in vbuild.toml (which the VBUILD_REMOTE_URL,
/// VBUILD_REMOTE_MODE and VBUILD_REMOTE_INSTANCE variables override too).
/// Credentials are never taken from the command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RemoteArgs {
    /// Remote cache URL: http(s)://… (Bazel HTTP cache) or grpc(s)://… (REAPI).
    #[arg(long = "remote", value_name = "URL")]
    pub remote: Option<String>,
    /// read-write (upload results) or read-only.
    #[arg(long, value_enum, value_name = "MODE")]
    pub remote_mode: Option<RemoteModeArg>,
    /// REAPI instance name.
    #[arg(long, value_name = "NAME")]
    pub remote_instance: Option<String>,
    /// Do not use a remote cache in this run.
    #[arg(long, conflicts_with_all = ["remote", "remote_mode", "remote_instance"])]
    pub no_remote: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteModeArg {
    ReadWrite,
    ReadOnly,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Labels or patterns: //app:build, :build, //..., //pkg/..., or a
    /// target name in every package: build (= //...:build)
    #[arg(required_unless_present = "since")]
    pub patterns: Vec<String>,
    /// Only targets of packages with files changed since this git ref
    /// (committed or not), and their dependents (default pattern //...).
    #[arg(long, value_name = "REF")]
    pub since: Option<String>,
    /// After `--`: extra arguments for the one target named (part of its key).
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
    /// Actions to run at once: a number, or a percentage of the cores
    /// (`-j 50%`); default twice the number of cores.
    #[arg(short = 'j', long = "jobs", value_parser = parse_jobs)]
    pub jobs: Option<Jobs>,
    /// Keep building what does not depend on a failed action.
    #[arg(short = 'k', long)]
    pub keep_going: bool,
    /// Run every action; neither read nor write the action cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Override the sandbox of every action; `strict` is `namespaces` that
    /// refuses to fall back to `scratch` when namespaces are unavailable.
    #[arg(long, value_enum)]
    pub sandbox: Option<SandboxArg>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Write a Chrome trace of the run (open in Perfetto or chrome://tracing):
    /// one track per worker, each action's phases.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct WhyArgs {
    /// Targets or patterns, e.g. //app:build, :build, //...
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// One JSON event per line on stdout (the `--json` events of `run`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// How a run reports (shared by `run` and `why`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OutputArgs {
    /// Print one JSON event per line on stdout instead of the status lines
    /// (schema/events/run-events.v1.schema.json).
    #[arg(long)]
    pub json: bool,
    /// Which actions' logs to replay: full, new-only (not hits),
    /// errors-only, none.
    #[arg(long, value_enum, default_value = "full", value_name = "WHICH")]
    pub output_logs: crate::report::OutputLogs,
    /// Write the whole run (counts and every action) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryOutput {
    Label,
    Json,
    Dot,
}

/// `-j`: a count, or a percentage of the cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jobs {
    Count(usize),
    Percent(u32),
}

impl Jobs {
    pub fn resolve(self, cores: usize) -> usize {
        match self {
            Jobs::Count(n) => n.max(1),
            Jobs::Percent(p) => (cores * p as usize / 100).max(1),
        }
    }
}

fn parse_jobs(text: &str) -> Result<Jobs, String> {
    let bad =
        || format!("`{text}` is not a number of jobs or a percentage of the cores (e.g. 4 or 50%)");
    match text.strip_suffix('%') {
        Some(p) => p.parse().map(Jobs::Percent).map_err(|_| bad()),
        None => text.parse().map(Jobs::Count).map_err(|_| bad()),
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxArg {
    Strict,
    Namespaces,
    Scratch,
    None,
}

#[derive(Subcommand, Debug)]
pub enum StoreCmd {
    /// Where the store is, its size budget and usage (creates nothing).
    Stats,
    /// Delete the least recently used entries and the blobs nothing needs
    /// until the store fits its budget; never what a running build holds.
    Gc {
        /// The budget for this collection, e.g. 500M, 10G (default: the
        /// store's budget, $VBUILD_STORE_MAX_SIZE or 10G).
        #[arg(long, value_name = "SIZE", value_parser = vbuild_store::parse_size)]
        max_size: Option<u64>,
    },
    /// Check every blob (its bytes hash to its name) and every cache entry
    /// and record (parses, points only at sound blobs); exit 1 if anything
    /// was wrong.
    Verify {
        /// Delete bad blobs and drop the entries and records that are
        /// unusable (those actions run again on the next build).
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ToolCmd {
    /// This input (file or directory, relative to the working directory) does not affect the result.
    IgnoreInput { path: PathBuf },
    /// Files written under this path are not outputs (e.g. a tool cache).
    IgnoreOutput { path: PathBuf },
    /// Do not cache this run.
    DisableCache,
    /// Print a variable of vbuild's environment (nothing when unset); its value enters the key.
    GetEnv {
        name: String,
        /// Read it without making the key depend on it.
        #[arg(long)]
        untracked: bool,
    },
    /// Print NAME=VALUE for every variable matching a glob or prefix.
    GetEnvs {
        #[arg(long, conflicts_with = "prefix", required_unless_present = "prefix")]
        glob: Option<String>,
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long)]
        untracked: bool,
    },
    /// Report the exact files the tool read: only their contents count.
    ReportUsedInputs { paths: Vec<PathBuf> },
}
