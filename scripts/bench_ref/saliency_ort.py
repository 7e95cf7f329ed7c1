"""onnxruntime's whole-process time for a saliency model over a folder of frames, prepared as
the model's application does (rembg for U2-Netp: Pillow LANCZOS to 320x320, normalisation by
the image maximum and ImageNet statistics; imgly for IS-Net: bilinear to 1024x1024,
(v - 128) / 256), the map resized back to the frame, thresholded at 0.5 and written as PNG.

    python3 saliency_ort.py MODEL.onnx rembg|imgly FRAMES_DIR OUT_DIR [COUNT]

2 intra-op threads. Timed from outside (the harness) as one process, like `deva track`.
"""

import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


def prepare(img, style):
    if style == "rembg":
        x = np.asarray(img.resize((320, 320), Image.LANCZOS), dtype=np.float64)
        x = (x / max(x.max(), 1.0) - MEAN) / STD
    else:
        x = (np.asarray(img.resize((1024, 1024), Image.BILINEAR), dtype=np.float32) - 128) / 256
    return x.transpose(2, 0, 1)[None].astype(np.float32)


def main():
    model, style, frames, out = sys.argv[1:5]
    count = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    os.makedirs(out, exist_ok=True)
    for f in sorted(os.listdir(frames))[:count]:
        img = Image.open(os.path.join(frames, f)).convert("RGB")
        pred = sess.run(None, {name: prepare(img, style)})[0][0, 0]
        if style == "rembg":
            pred = (pred - pred.min()) / max(pred.max() - pred.min(), 1e-12)
        sal = Image.fromarray((pred * 255).astype(np.uint8)).resize(img.size, Image.BILINEAR)
        mask = (np.asarray(sal) > 127).astype(np.uint8) * 255
        Image.fromarray(mask).save(os.path.join(out, os.path.splitext(f)[0] + ".png"))


if __name__ == "__main__":
    main()
