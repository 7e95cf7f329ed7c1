"""Times one key-frame forward of the official ReferFormer at the real size (random weights,
the same sizes as benches/referformer.rs: ResNet-50, RoBERTa-base-sized text encoder, width 256,
4 + 4 transformer layers, 5 queries, 65 classes, box refinement) on a 360x640 input with
torch.set_num_threads(2), for comparison with `cargo bench --bench referformer`.

Usage: python time_official.py --referformer-src PATH [--runs 5]
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch

import make_fixture as mf


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--referformer-src", type=Path, required=True)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(2)
    from transformers import RobertaConfig, RobertaModel
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp)
        mf.make_text_model(text, 0)
        cfg = RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                            num_attention_heads=12, intermediate_size=3072,
                            max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                            layer_norm_eps=1e-5)
        RobertaModel(cfg).save_pretrained(text)
        args = mf.small_args(360, "r50")
        args.hidden_dim, args.enc_layers, args.dec_layers = 256, 4, 4
        args.dim_feedforward, args.mask_dim = 2048, 256
        model, _ = mf.build_model(a.referformer_src, text, args, 0)
    x = torch.randn(3, 360, 640)
    target = [{"size": torch.as_tensor([360, 640])}]
    expr = mf.EXPRESSIONS[0]
    times = []
    with torch.no_grad():
        model([x[None]], [expr], target)  # warm-up
        for _ in range(a.runs):
            t0 = time.perf_counter()
            model([x[None]], [expr], target)
            times.append(time.perf_counter() - t0)
    times.sort()
    print(f"official ReferFormer forward 360x640, 2 threads: median {times[len(times) // 2]:.3f} s "
          f"(min {times[0]:.3f}, max {times[-1]:.3f}, {a.runs} runs)")
    print(f"TIME_MS {times[len(times) // 2] * 1e3:.1f}")


if __name__ == "__main__":
    main()
