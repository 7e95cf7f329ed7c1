#!/usr/bin/env bash
# The project's test command. On a fresh machine it also installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets 2>&1
