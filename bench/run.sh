#!/usr/bin/env bash
# The load benchmark is a Rust program (crates/bench): see `bench/run.sh --help` and docs/performance.md.
exec cargo run --release --locked --quiet --manifest-path "$(dirname -- "${BASH_SOURCE[0]}")/../Cargo.toml" -p userstack-bench -- "$@"
