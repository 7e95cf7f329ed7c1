"""PyTorch time of the official DEVA VOS step (`DEVAInferenceCore.step`) at 854x480 on the CPU.

    python3 deva_step.py DEVA_CHECKOUT OBJECTS [STEPS]

Random weights (the speed does not depend on them), default evaluation settings (key 64,
value 512, mem_every 5, top_k 30, long-term memory on). Frame 0 carries OBJECTS square masks;
the next STEPS frames (default 8) are propagated. The frames are the same textured frames with
moving squares as `benches/propagator.rs`. Prints `TIME_MS <median ms per step>`.
"""

import statistics
import sys
import time

import numpy as np
import torch

W, H = 854, 480


def boxes(n, t):
    side = H // 8
    return [((40 + i * (W - 2 * side) // max(n, 1) + 3 * t) % (W - side),
             (60 + 70 * i + 2 * t) % (H - side), side) for i in range(n)]


def frame(t, n):
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([(x * 7) % 256, (y * 5) % 256, (x + y) % 256], -1).astype(np.uint8)
    for i, (bx, by, s) in enumerate(boxes(n, t)):
        img[by:by + s, bx:bx + s] = (200, (50 * i) % 256, (255 - 40 * i) % 256)
    return img


def main():
    sys.path.insert(0, sys.argv[1])
    from deva.inference.inference_core import DEVAInferenceCore
    from deva.model import resnet
    from deva.model.network import DEVA

    # Random weights: skip the ImageNet download the backbone constructors ask for.
    resnet.model_zoo.load_url = lambda *args, **kwargs: None
    resnet.load_weights_add_extra_dim = lambda *args, **kwargs: None

    n = int(sys.argv[2])
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = dict(key_dim=64, value_dim=512, pix_feat_dim=512, disable_long_term=False,
                  enable_long_term=True, max_mid_term_frames=10, min_mid_term_frames=5,
                  max_long_term_elements=10000, num_prototypes=128, top_k=30, mem_every=5,
                  chunk_size=-1, size=480, amp=False,
                  enable_long_term_count_usage=True)
    net = DEVA(config).eval()
    core = DEVAInferenceCore(net, config)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def image(t):
        x = torch.from_numpy(frame(t, n)).permute(2, 0, 1).float() / 255
        return (x - mean) / std

    mask = torch.zeros(H, W, dtype=torch.long)
    for i, (bx, by, s) in enumerate(boxes(n, 0)):
        mask[by:by + s, bx:bx + s] = i + 1
    times = []
    with torch.inference_mode():
        core.step(image(0), mask, list(range(1, n + 1)))
        for t in range(1, steps + 1):
            x = image(t)
            start = time.perf_counter()
            core.step(x)
            times.append(time.perf_counter() - start)
    print(f"TIME_MS {statistics.median(times) * 1e3:.1f}")


if __name__ == "__main__":
    main()
