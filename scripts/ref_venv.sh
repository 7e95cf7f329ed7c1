#!/usr/bin/env bash
# Prints the path of the reference Python environment (PyTorch, onnxruntime, OpenCV,
# transformers from the package registry), creating it on first use.
#
#   venv=$(bash scripts/ref_venv.sh [EXTRA_PACKAGE ...])
#
# The side-by-side benchmarks (scripts/bench_vs_reference.sh) and the oracles under tests/oracle
# share it. DEVA_REF_VENV names an existing environment to use instead (default
# target/bench-venv); extra packages given as arguments are installed into it when missing.
# Progress goes to stderr, the path alone to stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${DEVA_REF_VENV:-$root/target/bench-venv}
if [ ! -x "$venv/bin/python" ]; then
    echo "creating the reference environment in $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch onnxruntime opencv-python-headless transformers \
        pillow numpy pulp safetensors >&2
fi
missing=()
for package in "$@"; do
    "$venv/bin/pip" show --quiet "${package%%[<>=!~]*}" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing into $venv: ${missing[*]}" >&2
    "$venv/bin/pip" install --quiet "${missing[@]}" >&2
fi
echo "$venv"
