# Sourced by scripts/demo.sh and scripts/test.sh: puts a rustup toolchain on PATH and installs
# FFmpeg (video files in and out) with apt-get when running as root.
#   FFMPEG_MISSING: what the caller does without FFmpeg (printed when it cannot be installed)

# Rust toolchain: a rustup install lives in ~/.cargo/bin (see README.md to install Rust).
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust 1.88 or newer from https://rustup.rs, then run this again" >&2
  exit 1
fi

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ffmpeg with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
  else
    echo "ffmpeg/ffprobe not found and not installable here (needs root and apt-get):" \
      "${FFMPEG_MISSING}; see README.md to install FFmpeg"
  fi
fi
