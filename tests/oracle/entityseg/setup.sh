#!/usr/bin/env bash
# Prepares the EntitySeg oracle: the official sources and a Python with detectron2's pure
# dependencies. Usage: setup.sh SRC_DIR [VENV]
#   SRC_DIR  where the sources go (qqlu/Entity and facebookresearch/detectron2 checkouts)
#   VENV     a virtual environment with torch 2.x (CPU) [default: the project's reference
#            environment, scripts/ref_venv.sh, created on first use]; torchvision and
#            detectron2's pure-Python dependencies are installed into it
# detectron2 is used from its source tree on PYTHONPATH without compiling its C++ extension:
# the R50 configuration of the fixture has no deformable convolution, and make_fixture.py
# imports the EntitySeg modules without entityseg/__init__.py (whose evaluator needs the
# extension). For the DCN config, build it: (cd $SRC_DIR/detectron2 && python setup.py
# build_ext --inplace).
set -euo pipefail
SRC=${1:?usage: setup.sh SRC_DIR [VENV]}
[ $# -ge 2 ] && export DEVA_REF_VENV=$2
VENV=$(bash "$(dirname "$0")/../../../scripts/ref_venv.sh" torchvision "fvcore>=0.1.5,<0.1.6" \
  "iopath>=0.1.7,<0.1.10" yacs termcolor tabulate cloudpickle "omegaconf>=2.1,<2.4" pycocotools \
  safetensors opencv-python-headless)
mkdir -p "$SRC"
clone() { # repo dir
  if [ ! -d "$SRC/$2" ]; then git clone --depth 1 "https://github.com/$1" "$SRC/$2"; fi
}
clone qqlu/Entity Entity
clone facebookresearch/detectron2 detectron2
cat <<MSG
Now make a fixture, e.g.:
  $VENV/bin/python $(dirname "$0")/make_fixture.py --seed 0 \\
    --entity-src $SRC/Entity --detectron2-src $SRC/detectron2 --out \$DEVA_FIXTURES/entityseg
MSG
