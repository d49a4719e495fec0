//! `userstack`: see `userstack --help`. All logic lives in the `userstack_server` library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    userstack_server::cli::run(userstack_server::cli::Cli::parse())
}
