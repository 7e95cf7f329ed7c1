#!/usr/bin/env bash
# The project's test command. On a fresh machine it also installs what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."
# Saliency parity tests load U²-Netp from the models folder ($DEVA_MODELS or ~/.cache/deva/models).
cargo run --quiet --bin deva -- models fetch u2netp 2>&1
cargo test --all-targets 2>&1
