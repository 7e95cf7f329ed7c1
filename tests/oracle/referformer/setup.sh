#!/usr/bin/env bash
# Prepares the Python for the ReferFormer oracle: the project's reference environment
# (scripts/ref_venv.sh; DEVA_REF_VENV names another) plus what the official code imports beyond
# it. Prints the environment's path.
set -euo pipefail
bash "$(dirname "$0")/../../../scripts/ref_venv.sh" einops torchvision timm
