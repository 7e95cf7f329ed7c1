"""OpenCV DIS ("medium" preset) end-point error on the synthetic motions of `tests/flow.rs`.

The test moves three DAVIS frames (blackswan 0, car-shadow 20, dog 30) by four similarity
transforms about the image centre (bilinear, border replicated, rounded to 8 bits) and
measures the mean end-point error against the true flow, leaving out a 16-pixel margin at
both ends of each displacement. This script builds the same pairs with numpy and prints
OpenCV's error per case and the mean, to set beside the test's own lines
(`cargo test --release --test flow -- --nocapture flow_end_point_error`).

    python3 flow_epe.py DAVIS16_DIR
"""

import math
import sys

import cv2
import numpy as np
from PIL import Image

MOTIONS = [  # name, scale, angle (degrees), tx, ty
    ("translation", 1.0, 0.0, 3.37, -2.71),
    ("rotation", 1.0, 1.5, 0.0, 0.0),
    ("zoom", 1.03, 0.0, 0.0, 0.0),
    ("combined", 0.98, -1.0, -1.6, 2.3),
]
FRAMES = [("blackswan", 0), ("car-shadow", 20), ("dog", 30)]
MARGIN = 16.0


def forward(m, c, x, y):
    _, s, a, tx, ty = m
    sn, cs = math.sin(math.radians(a)), math.cos(math.radians(a))
    dx, dy = x - c[0], y - c[1]
    return c[0] + s * (cs * dx - sn * dy) + tx, c[1] + s * (sn * dx + cs * dy) + ty


def moved(img, m, c):
    _, s, a, tx, ty = m
    h, w, _ = img.shape
    sn, cs = math.sin(math.radians(a)), math.cos(math.radians(a))
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = (x - tx - c[0]) / s, (y - ty - c[1]) / s
    sx = np.clip(c[0] + cs * dx + sn * dy, 0, w - 1)
    sy = np.clip(c[1] - sn * dx + cs * dy, 0, h - 1)
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    f = img.astype(np.float64)
    top = f[y0, x0] * (1 - fx) + f[y0, x1] * fx
    bot = f[y1, x0] * (1 - fx) + f[y1, x1] * fx
    return np.clip(np.round(top * (1 - fy) + bot * fy), 0, 255).astype(np.uint8)


def main():
    root = sys.argv[1]
    cv2.setNumThreads(2)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    errors = []
    for seq, k in FRAMES:
        img = np.asarray(Image.open(f"{root}/JPEGImages/480p/{seq}/{k:05d}.jpg").convert("RGB"))
        h, w, _ = img.shape
        c = ((w - 1) / 2, (h - 1) / 2)
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        for m in MOTIONS:
            b = moved(img, m, c)
            g0, g1 = (cv2.cvtColor(i, cv2.COLOR_RGB2GRAY) for i in (img, b))
            flow = dis.calc(g0, g1, None)
            tx, ty = forward(m, c, x, y)
            inside = lambda px, py: (px >= MARGIN) & (py >= MARGIN) & (px <= w - 1 - MARGIN) & (py <= h - 1 - MARGIN)
            keep = inside(x, y) & inside(tx, ty)
            e = np.hypot(flow[..., 0] - (tx - x), flow[..., 1] - (ty - y))[keep].mean()
            errors.append(e)
            print(f"{seq}/{k:05d} {m[0]}: EPE {e:.3f} px")
    print(f"mean EPE {np.mean(errors):.3f} px over {len(errors)} cases")


if __name__ == "__main__":
    main()
