"""PyTorch reference time for `cargo bench --bench grounding_dino`: one forward of Hugging Face
`GroundingDinoForObjectDetection` with random weights at the grounding-dino-tiny configuration
(transformers' defaults: Swin-T, BERT-base, 6 + 6 layers, 900 queries) on an 800 x 1333 input
with the bench's prompt `[CLS] person . horse . fence . [SEP]`, on the CPU.

Usage: python scripts/bench_grounding_dino_torch.py [--threads 2] [--runs 1] [--size 800 1333]
Needs torch and transformers (no download: the weights are random). Prints one line per run:
the forward's wall time and the process CPU time it used (all threads; on a loaded machine the
CPU time is the steadier figure).
"""

import argparse
import time

import torch
from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--size", type=int, nargs=2, default=[800, 1333], metavar=("H", "W"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval()
    h, w = args.size
    pixel_values = torch.randn(1, 3, h, w)
    pixel_mask = torch.ones(1, h, w, dtype=torch.long)
    input_ids = torch.tensor([[101, 2711, 1012, 3586, 1012, 8638, 1012, 102]])
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        for _ in range(args.runs):
            start, cpu = time.perf_counter(), time.process_time()
            out = model(
                pixel_values=pixel_values,
                pixel_mask=pixel_mask,
                input_ids=input_ids,
                attention_mask=attention_mask,
            )
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            print(f"pytorch forward {h}x{w}, {args.threads} threads: {seconds:.2f} s wall, "
                  f"{cpu:.2f} s CPU (logits {tuple(out.logits.shape)})", flush=True)


if __name__ == "__main__":
    main()
