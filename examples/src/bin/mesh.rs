//! `mesh`: the tai mesh program. See `mesh --help`, and the `tai_examples` crate
//! (`cli`, `tour`, `call`) for what each command does.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tai_examples::cli::Cli::parse();
    tai_examples::cli::run(cli).await
}
