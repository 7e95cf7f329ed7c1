"""Oracle for tests/sam/encoder.rs::tiny_vit_matches_mobile_sam: runs MobileSAM's official TinyViT
(ChaoningZhang/MobileSAM, mobile_sam/modeling/tiny_vit_sam.py, the configuration of
build_sam_vit_t) in float32 on CPU with the project's synthetic weight formula
(src/nn/synthetic.rs, seed 7) and a formula input image, and writes sampled outputs to
mobile_sam_tiny_vit.json.

Usage: python3 mobile_sam_oracle.py /path/to/MobileSAM/mobile_sam/modeling/tiny_vit_sam.py
(needs torch; timm's helpers are stubbed because they do nothing at inference).
"""
import importlib.util
import json
import math
import sys
import types

import torch

SEED = 7
STRIDE = 61  # sample every STRIDE-th value of each output
M64 = (1 << 64) - 1


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def splitmix64(x):
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def synthetic(name, shape, bn):
    n = math.prod(shape)
    base = fnv1a64(name) ^ splitmix64(SEED)
    v = [(2.0 * (splitmix64((base + i) & M64) >> 61) - 7.0) / 7.0 for i in range(n)]
    suffix = name.rsplit(".", 1)[-1]
    if bn and suffix == "weight":
        v = [1.0 + 0.1 * x for x in v]
    elif bn and suffix in ("bias", "running_mean"):
        v = [0.05 * x for x in v]
    elif bn and suffix == "running_var":
        v = [1.0 + 0.25 * x for x in v]
    elif suffix == "weight" and len(shape) >= 2:
        s = math.sqrt(math.prod(shape[1:]))
        v = [x * 1.5 / s for x in v]
    elif suffix == "bias":
        v = [0.05 * x for x in v]
    return torch.tensor(v, dtype=torch.float64).to(torch.float32).reshape(shape)


def stub_timm():
    timm = types.ModuleType("timm")
    models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")

    class DropPath(torch.nn.Module):
        def __init__(self, drop_prob=None):
            super().__init__()

        def forward(self, x):
            return x

    layers.DropPath = DropPath
    layers.to_2tuple = lambda x: (x, x)
    layers.trunc_normal_ = lambda t, std=1.0: t
    registry.register_model = lambda f: f
    for name, mod in [("timm", timm), ("timm.models", models),
                      ("timm.models.layers", layers), ("timm.models.registry", registry)]:
        sys.modules[name] = mod


def main():
    stub_timm()
    spec = importlib.util.spec_from_file_location("tiny_vit_sam", sys.argv[1])
    tv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tv)
    model = tv.TinyViT(img_size=1024, in_chans=3, num_classes=1000,
                       embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                       num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7],
                       mlp_ratio=4., drop_rate=0., drop_path_rate=0.0, use_checkpoint=False,
                       mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8)
    sd = model.state_dict()
    bn_prefixes = {k[: -len(".running_var")] for k in sd if k.endswith(".running_var")}
    new = {}
    for k, t in sd.items():
        if k.endswith("num_batches_tracked"):
            new[k] = t
            continue
        bn = k.rsplit(".", 1)[0] in bn_prefixes
        # Keys as in a SAM checkpoint (prefix image_encoder.), as the Rust side names them.
        new[k] = synthetic("image_encoder." + k, list(t.shape), bn)
    model.load_state_dict(new)
    model.eval()
    c, y, x = torch.meshgrid(torch.arange(3, dtype=torch.float64),
                             torch.arange(1024, dtype=torch.float64),
                             torch.arange(1024, dtype=torch.float64), indexing="ij")
    image = (1.5 * torch.sin(0.01 * x * (c + 1) + 0.013 * y)).to(torch.float32)[None]
    with torch.no_grad():
        out = model(image)
    assert list(out.shape) == [1, 256, 64, 64]
    out = out.flatten()
    flat = out.tolist()
    doc = {
        "oracle": "MobileSAM tiny_vit_sam.TinyViT (build_sam_vit_t configuration), torch "
                  + torch.__version__ + ", float32 CPU; synthetic weights seed %d" % SEED,
        "input": "x[c, y, x] = float32(1.5 * sin(0.01 * x * (c + 1) + 0.013 * y)), 1x3x1024x1024",
        "seed": SEED,
        "shape": [1, 256, 64, 64],
        "stride": STRIDE,
        "max_abs": max(abs(v) for v in flat),
        "mean": sum(flat) / len(flat),
        "samples": [float("%.8g" % v) for v in flat[::STRIDE]],
    }
    json.dump(doc, open(sys.argv[2] if len(sys.argv) > 2 else "mobile_sam_tiny_vit.json", "w"))


if __name__ == "__main__":
    main()
