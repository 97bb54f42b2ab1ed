//! Command-line flags. Everything else is configured by environment variables, which
//! `--help` lists with their defaults.

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::config::help_text;

/// Fires OpenWhisk triggers for MQTT messages and on cron schedules.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Validate the configuration, print it with secrets masked, and exit (0 or 2).
    #[arg(long)]
    pub check: bool,
    /// Do everything but POST: log each fire that would be made. OW_API_HOST and
    /// OW_AUTH are then optional.
    #[arg(long)]
    pub dry_run: bool,
}

impl Cli {
    /// Parses the process arguments; `--help` ends with the environment variables.
    pub fn parse_args() -> Cli {
        let matches = Cli::command().after_help(help_text()).get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}
