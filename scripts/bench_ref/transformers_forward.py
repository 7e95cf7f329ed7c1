"""PyTorch (transformers, random weights) time of one forward pass, 2 threads, to set beside
this project's benches of the same configurations.

    python3 transformers_forward.py sam-vit-b|grounding-dino-tiny|mask2former-swin-t|mask2former-r50 [REPEATS]

sam-vit-b: the image embedding of one 1024x1024 input (ViT-B, 768 dims, depth 12).
grounding-dino-tiny: Swin-T + BERT-base, 900 queries, 800x1333 input, 8-token prompt.
mask2former-*: COCO-panoptic sizes (100 queries, 133 classes), 480x864 input.
Prints `TIME_MS <median ms per forward>` after one warm-up forward.
"""

import statistics
import sys
import time

import torch

torch.set_num_threads(2)
torch.manual_seed(0)


def build(name):
    if name == "sam-vit-b":
        from transformers import SamConfig, SamModel
        m = SamModel(SamConfig()).eval()
        x = torch.randn(1, 3, 1024, 1024)
        return lambda: m.get_image_embeddings(x)
    if name == "grounding-dino-tiny":
        from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection
        m = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval()
        ids = torch.tensor([[101, 2711, 1012, 3586, 1012, 8638, 1012, 102]])
        px = torch.randn(1, 3, 800, 1333)
        mask = torch.ones(1, 800, 1333, dtype=torch.long)
        return lambda: m(pixel_values=px, input_ids=ids, attention_mask=torch.ones_like(ids),
                         pixel_mask=mask)
    if name.startswith("mask2former-"):
        from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation
        labels = {i: f"c{i}" for i in range(133)}
        if name.endswith("swin-t"):
            from transformers import SwinConfig
            bb = SwinConfig(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                            window_size=7, out_features=["stage1", "stage2", "stage3", "stage4"])
        else:
            from transformers import ResNetConfig
            bb = ResNetConfig(depths=[3, 4, 6, 3], layer_type="bottleneck",
                              hidden_sizes=[256, 512, 1024, 2048],
                              out_features=["stage1", "stage2", "stage3", "stage4"])
        m = Mask2FormerForUniversalSegmentation(
            Mask2FormerConfig(backbone_config=bb, num_queries=100, id2label=labels)).eval()
        x = torch.randn(1, 3, 480, 864)
        return lambda: m(pixel_values=x)
    raise SystemExit(f"unknown model {name!r}")


def main():
    run = build(sys.argv[1])
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    times = []
    with torch.inference_mode():
        run()
        for _ in range(repeats):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
    print(f"TIME_MS {statistics.median(times) * 1e3:.1f}")


if __name__ == "__main__":
    main()
