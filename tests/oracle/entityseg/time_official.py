"""Times one forward of the official EntitySeg R50 model (published `entity_r50_1x` sizes, the
official random initialisation) on a 854 × 480 frame resized to shorter side 800 (1333 × 749,
padded to 1344 × 768), CPU, 2 threads: the PyTorch side of `benches/entityseg.rs`.

    python time_official.py --entity-src SRC/Entity --detectron2-src SRC/detectron2 [--runs 3]
"""

import argparse
import time

import numpy as np
import torch

import make_fixture as mf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--entity-src", required=True)
    ap.add_argument("--detectron2-src", required=True)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    mf.SMALL.clear()
    mf.SMALL["MODEL.DEVICE"] = "cpu"
    mf.SMALL_BACKBONE["r50"] = {}
    cfg, EntityFPN, T = mf.import_official(args.entity_src, args.detectron2_src, "r50", {})
    torch.manual_seed(0)
    model = EntityFPN(cfg).eval()
    # With the official prior (0.01) no location is a candidate and the official
    # post-processing fails on an empty result; class logits of 0 make every location a
    # candidate, so the timing includes the full proposal budget (100 masks).
    model.det_head.fcos_head.cls_logits.bias.data.fill_(0.0)
    h, w = 480, 854
    yy, xx = np.mgrid[0:h, 0:w]
    bgr = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    resized = aug.get_transform(bgr).apply_image(bgr)
    inp = {"image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)), "height": h, "width": w}
    with torch.no_grad():
        model([inp])
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            out = model([inp])
            times.append(time.perf_counter() - t)
    print(f"resized {resized.shape[:2]}, entities {len(out[0]['instances'])}")
    print(f"forward: median {sorted(times)[len(times) // 2]:.3f} s over {args.runs} runs: {times}")
    print(f"TIME_MS {sorted(times)[len(times) // 2] * 1e3:.1f}")


if __name__ == "__main__":
    main()
