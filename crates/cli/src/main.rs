//! `fapiao`: the command-line tool of the Fapiao e-invoice system.
//!
//! Commands are listed only when they work. Exit status: 0 success, 2 invalid input or error
//! (the findings or the error chain on stderr).

mod preview;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Fapiao issues Chinese electronic VAT invoices (数电票) secured with SM2/SM3/SM4.
#[derive(Debug, Parser)]
#[command(name = "fapiao", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate an order and print the invoice it would become (not numbered, not signed).
    ///
    /// Every problem in the order is reported with its field path; the exit status is then 2.
    Preview(PreviewArgs),
}

/// Arguments of `fapiao preview`.
#[derive(Debug, clap::Args)]
struct PreviewArgs {
    /// The order, as JSON (see examples/orders/).
    order: PathBuf,
    /// Tax classification catalog to use instead of the bundled one
    /// (CSV: code,short_name,default_rate,name).
    #[arg(long, value_name = "FILE")]
    catalog: Option<PathBuf>,
    /// Print the computed invoice (or the findings) as JSON instead of the readable layout.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Preview(args) => preview::run(&preview::Plan::from_args(args)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
