//! `userstack`: see `userstack --help`. All logic lives in the `userstack_server` library.

use std::process::ExitCode;

use clap::Parser;

/// A request allocates and frees some seventy small blocks (tower's boxed futures, headers);
/// glibc's malloc spent a quarter of the warm path's instructions on them (callgrind).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    userstack_server::cli::run(userstack_server::cli::Cli::parse())
}
