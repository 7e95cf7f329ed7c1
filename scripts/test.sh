#!/usr/bin/env bash
# The project's test command (see README.md). On a fresh machine it also installs what the tests
# need. Steps run in order; add new ones before "Tests".
#
# Environment: DEVA_FIXTURES (parity fixtures; unset = those tests print "skipped"),
# DEVA_DATA (real video data; default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. Rust toolchain (https://rustup.rs); a rustup install lives in ~/.cargo/bin.
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  echo "installing Rust with rustup (minimal profile)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# 2. FFmpeg (video files in and out). Installed with apt-get when running as root; otherwise
#    the video tests print "skipped" with the reason.
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ffmpeg with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
  else
    echo "ffmpeg/ffprobe not found and not installable here (needs root and apt-get):" \
      "video tests will be skipped; see README.md to install FFmpeg"
  fi
fi

# 3. Tests.
cargo test --all-targets 2>&1
