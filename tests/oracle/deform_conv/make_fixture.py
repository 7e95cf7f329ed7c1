"""Writes the deformable-convolution parity cases: random inputs, offsets (large enough that
some taps fall outside the map), masks and weights, and what
``torchvision.ops.deform_conv2d`` computes from them.

torchvision's operator is the same computation as detectron2's CUDA-only ``DeformConv`` /
``ModulatedDeformConv`` (``detectron2/layers/deform_conv.py``): offsets ``[n, 2·G·k², ho, wo]``
as (Δy, Δx) pairs per tap and deformable group, bilinear sampling with zero outside, the mask
multiplying each sampled tap, then the convolution with the weight. detectron2 cannot run it on
a CPU, so torchvision is the oracle; ``tests/oracle/entityseg/make_fixture.py --dcn`` makes the
same substitution would be needed for an end-to-end DCN EntitySeg oracle (not made yet).

Every case ``i`` stores ``{i}.x``, ``{i}.offset``, ``{i}.mask`` (absent: unmodulated DCNv1),
``{i}.weight``, ``{i}.bias``, ``{i}.out`` and ``{i}.geometry`` = [stride, padding, dilation,
deformable groups] (int64). The test reads every size from the file.

    "$(bash scripts/ref_venv.sh torchvision)"/bin/python tests/oracle/deform_conv/make_fixture.py \
        --out tests/data/deform_conv/cases.safetensors [--seed 0]
"""

import argparse

import torch
from safetensors.torch import save_file
from torchvision.ops import deform_conv2d

CASES = [
    # n, c_in, h, w, c_out, k, stride, pad, dilation, deformable groups, modulated
    (1, 4, 7, 9, 3, 3, 1, 1, 1, 1, True),
    (2, 4, 8, 6, 5, 3, 2, 1, 1, 2, True),
    (1, 6, 9, 9, 4, 3, 1, 2, 2, 1, False),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    out = {}
    for i, (n, c, h, w, co, k, s, p, d, g, modulated) in enumerate(CASES):
        ho = (h + 2 * p - d * (k - 1) - 1) // s + 1
        wo = (w + 2 * p - d * (k - 1) - 1) // s + 1
        x = torch.randn(n, c, h, w)
        offset = torch.randn(n, 2 * g * k * k, ho, wo) * 2.5
        mask = torch.rand(n, g * k * k, ho, wo) if modulated else None
        weight = torch.randn(co, c, k, k) * 0.3
        bias = torch.randn(co)
        y = deform_conv2d(x, offset, weight, bias, stride=s, padding=p, dilation=d, mask=mask)
        out.update({f"{i}.x": x, f"{i}.offset": offset, f"{i}.weight": weight,
                    f"{i}.bias": bias, f"{i}.out": y,
                    f"{i}.geometry": torch.tensor([s, p, d, g], dtype=torch.int64)})
        if mask is not None:
            out[f"{i}.mask"] = mask
    save_file({k: v.contiguous() for k, v in out.items()}, a.out)


if __name__ == "__main__":
    main()
