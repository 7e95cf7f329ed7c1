#!/usr/bin/env bash
# Installs what the official ReferFormer code needs beyond the reference venv.
set -euo pipefail
VENV=${VENV:-/work/venv-ref}
"$VENV/bin/pip" install einops
