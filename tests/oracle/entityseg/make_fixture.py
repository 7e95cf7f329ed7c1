"""EntitySeg parity fixture: runs the official EntityFPN (qqlu/Entity, Entity/EntitySeg, on
detectron2) with random weights on a few images and writes what the Rust port must reproduce.

Usage (see README.md and setup.sh beside this file):

    PYTHONPATH=$DETECTRON2_SRC python make_fixture.py --seed 0 [--backbone r50|swin] \
        --entity-src $ENTITY_SRC --detectron2-src $DETECTRON2_SRC --out $DEVA_FIXTURES/entityseg

`--backbone r50` (the default) narrows `configs/entity_r50_1x.yaml`, `--backbone swin`
`configs/entity_swin_t_1x.yaml` (the official Swin backbone module, small widths).
Seed 0 uses real frames from ../shared/data (DAVIS-16), any other seed two procedural images
of sizes drawn from the seed. `--min-size` / `--max-size` set the model input size
(detectron2's INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST, default 192 / 320).
Writes ``weights.pth`` (``{"model": state_dict}``, the official detectron2 key layout),
``cases.safetensors`` (every tensor listed in the generated README), ``config.json`` and
``README.md``.
"""

import argparse
import json
import math
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

# Per --backbone: the published configuration, and its backbone narrowed so that the tests are
# fast. Everything that is not listed keeps the value of the official config (and of
# add_entity_config).
CONFIG_FILES = {"r50": "configs/entity_r50_1x.yaml", "swin": "configs/entity_swin_t_1x.yaml"}
SMALL_BACKBONE = {
    "r50": {
        "MODEL.RESNETS.STEM_OUT_CHANNELS": 16,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,
        "MODEL.RESNETS.WIDTH_PER_GROUP": 16,
    },
    # Swin-T's layout (4 stages, window 7, patch 4) at width 32, 2 blocks per stage, head
    # width 32.
    "swin": {
        "MODEL.SWINT.EMBED_DIM": 32,
        "MODEL.SWINT.DEPTHS": [2, 2, 2, 2],
        "MODEL.SWINT.NUM_HEADS": [1, 2, 4, 8],
    },
}
SMALL = {
    "MODEL.DEVICE": "cpu",
    "MODEL.FPN.OUT_CHANNELS": 64,
    "MODEL.FCOS.NUM_CLS_CONVS": 2,
    "MODEL.FCOS.NUM_BOX_CONVS": 2,
    "MODEL.KERNEL_HEAD.CONVS_DIM": 64,
    "MODEL.KERNEL_HEAD.NUM_CONVS": 2,
    "MODEL.CONDINST.MASK_BRANCH.CHANNELS": 32,
    "MODEL.CONDINST.MASK_BRANCH.NUM_CONVS": 2,
}
# Model input sizes (detectron2's ResizeShortestEdge), overridable with --min-size/--max-size.
MIN_SIZE_TEST = 192
MAX_SIZE_TEST = 320
# Fraction of the head's locations whose class probability passes the 0.05 candidate threshold;
# the random class-logit bias is shifted so that this many do.
CANDIDATE_FRACTION = 0.15
# Fraction of mask pixels (over all proposals of the first image) above probability 0.5.
MASK_FRACTION = 0.08


def import_official(entity_src, detectron2_src, backbone, sizes):
    """Imports the official modules without running entityseg/__init__.py (its evaluator needs
    detectron2's compiled extension, which these configurations do not use) nor
    entityseg/backbone/__init__.py (its MiT module registers names with timm)."""
    sys.path.insert(0, detectron2_src)
    seg_dir = os.path.join(entity_src, "Entity", "EntitySeg")
    sys.path.insert(0, seg_dir)
    pkg = types.ModuleType("entityseg")
    pkg.__path__ = [os.path.join(seg_dir, "entityseg")]
    sys.modules["entityseg"] = pkg
    bb = types.ModuleType("entityseg.backbone")
    bb.__path__ = [os.path.join(seg_dir, "entityseg", "backbone")]
    sys.modules["entityseg.backbone"] = bb
    if backbone == "swin":
        import entityseg.backbone.swin  # noqa: F401 (registers build_retinanet_swin_fpn_backbone)
    from detectron2.config import get_cfg
    from detectron2.data import transforms as T
    from entityseg.arch import EntityFPN
    from entityseg.config import add_entity_config

    cfg = get_cfg()
    add_entity_config(cfg)
    cfg.merge_from_file(os.path.join(seg_dir, CONFIG_FILES[backbone]))
    opts = []
    for k, v in {**SMALL_BACKBONE[backbone], **SMALL, **sizes}.items():
        opts += [k, str(v)]
    cfg.merge_from_list(opts)
    cfg.freeze()
    # EntityFPN.postprocess allocates its background with .cuda(); on a CPU machine that
    # must be the identity.
    torch.Tensor.cuda = lambda self, *a, **k: self
    return cfg, EntityFPN, T


def randomize(model, gen):
    """Deterministic random weights that keep activations in a useful range."""
    for name, p in model.state_dict().items():
        if name.endswith("num_batches_tracked") or not p.is_floating_point():
            continue
        if name.endswith("sizes_of_interest"):
            continue
        shape = p.shape
        if name.endswith("relative_position_bias_table"):
            v = torch.randn(shape, generator=gen)
        elif p.dim() == 2 and name.endswith("weight"):
            # Linear layers (Swin): unit gain.
            v = torch.randn(shape, generator=gen) * math.sqrt(1.0 / shape[1])
        elif name.endswith("running_var"):
            v = torch.rand(shape, generator=gen) + 0.5
        elif name.endswith("running_mean"):
            v = torch.randn(shape, generator=gen) * 0.1
        elif p.dim() == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            v = torch.randn(shape, generator=gen) * math.sqrt(1.0 / fan_in)
        elif name.endswith(".scale"):
            v = torch.rand(shape, generator=gen) * 2.0 + 2.0
        elif name.endswith("weight"):
            v = torch.rand(shape, generator=gen) + 0.5
        else:
            v = torch.randn(shape, generator=gen) * 0.1
        p.copy_(v)
    # Residual blocks: the last BatchNorm of each block is scaled down so that the residual
    # stream does not grow without bound through the randomly weighted stages.
    for name, p in model.state_dict().items():
        if ".conv3.norm.weight" in name:
            p.mul_(0.3)
    # Controller: dynamic parameters whose first layer weighs the relative coordinates more
    # and whose output bias is negative, so that masks are blobs around their locations
    # (with unscaled random parameters every mask covers most of the image).
    out = model.controller.out_conv
    out.weight.data.mul_(0.5)
    c_in = model.mask_head.in_channels + 2
    for c in range(model.mask_head.channels):
        out.weight.data[c * c_in : c * c_in + 2] *= 3.0
    out.bias.data[-1] = -3.0
    # Regression outputs in pixels of the level (times the level's stride).
    model.det_head.fcos_head.bbox_pred.weight.data.mul_(4.0)


def procedural(seed, h, w):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    img += rng.uniform(40, 200, 3)[None, None]
    img += (xx / w)[..., None] * rng.uniform(-60, 60, 3)[None, None]
    for _ in range(6):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(h / 10, h / 3), rng.uniform(w / 10, w / 3)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        img[inside] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def images_for(seed, data_root):
    """(name, RGB uint8 HWC) images of the cases."""
    if seed == 0:
        import cv2

        out = []
        for video, frame in [("blackswan", "00000"), ("breakdance", "00010")]:
            p = os.path.join(data_root, "davis16", "JPEGImages", "480p", video, frame + ".jpg")
            bgr = cv2.imread(p, cv2.IMREAD_COLOR)
            if bgr is None:
                raise SystemExit(f"cannot read {p}")
            out.append((f"davis16/{video}/{frame}.jpg", bgr[:, :, ::-1].copy()))
        return out
    # Sizes drawn from the seed: landscape and portrait, some where the longer side limit
    # (max_size_test) decides the scale.
    rng = np.random.default_rng(seed)
    return [
        (f"procedural-{seed}-{i}", procedural(seed * 7 + 1 + i, int(h), int(w)))
        for i, (h, w) in enumerate([rng.integers(120, 360, 2), rng.integers(120, 360, 2)])
    ]


@torch.no_grad()
def run_case(model, cfg, T, rgb, put):
    """Runs one image through the official modules; `put(name, tensor)` records tensors."""
    h0, w0 = rgb.shape[:2]
    bgr = rgb[:, :, ::-1]
    # DefaultPredictor's preprocessing: BGR, ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST).
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    resized = aug.get_transform(bgr).apply_image(bgr)
    put("image", torch.from_numpy(rgb.copy()))
    put("image_resized", torch.from_numpy(resized[:, :, ::-1].copy()))
    inp = {
        "image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)),
        "height": h0,
        "width": w0,
    }
    images = model.preprocess_image([inp])
    put("input", images.tensor)
    bottom = model.backbone.bottom_up(images.tensor)
    for k in cfg.MODEL.FPN.IN_FEATURES:
        put(k, bottom[k])
    feats = model.backbone(images.tensor)
    for k, v in feats.items():
        put(k, v)
    head = model.det_head.fcos_head
    levels = [feats[f] for f in model.det_head.in_features]
    logits, reg, ctr, _, top = head(levels, model.controller)
    for i, f in enumerate(model.det_head.in_features):
        put(f"logits.{f}", logits[i])
        put(f"bbox_reg.{f}", reg[i])
        put(f"ctrness.{f}", ctr[i])
        put(f"controller.{f}", top[i])
    mask_feats = model.mask_branch(feats, None)
    put("mask_feats", mask_feats)
    proposals, _ = model.det_head(images, feats, None, model.controller)
    p = proposals[0]
    put("proposal_boxes", p.pred_boxes.tensor)
    put("proposal_scores", p.scores)
    put("proposal_locations", p.locations)
    put("proposal_levels", p.fpn_levels.to(torch.int64))
    put("proposal_params", p.top_feat)
    with_masks = model._forward_mask_heads_test(proposals, mask_feats)
    put("mask_probs", with_masks.pred_global_masks)
    # The whole official inference (the same modules again, then EntityFPN.postprocess).
    result = model([inp])[0]["instances"]
    put("final_masks", result.pred_masks.to(torch.uint8))
    put("final_scores", result.scores)
    put("final_boxes", result.pred_boxes.tensor)
    return {
        "bottom_up": list(cfg.MODEL.FPN.IN_FEATURES),
        "original_size": [h0, w0],
        "resized_size": list(resized.shape[:2]),
        "padded_size": list(images.tensor.shape[-2:]),
        "num_proposals": len(p),
        "num_final": len(result),
        "candidates": int(sum((l.sigmoid() > cfg.MODEL.FCOS.INFERENCE_TH_TEST).sum() for l in logits)),
    }


def calibrate(model, cfg, T, rgb):
    """Data-driven settings of a few random parameters on the first image: the class-logit bias
    so that CANDIDATE_FRACTION of the locations are candidates, and the mask branch's output
    convolution so that each mask feature has zero mean and unit spread (the relative
    coordinates then shape the masks as they do in a trained model)."""
    bgr = rgb[:, :, ::-1]
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
    resized = aug.get_transform(bgr).apply_image(bgr)
    images = model.preprocess_image(
        [{"image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1))}]
    )
    with torch.no_grad():
        feats = model.backbone(images.tensor)
        levels = [feats[f] for f in model.det_head.in_features]
        logits, _, _, _, _ = model.det_head.fcos_head(levels, None)
        flat = torch.cat([l.flatten() for l in logits])
        q = torch.quantile(flat, 1.0 - CANDIDATE_FRACTION)
        target = math.log(0.05 / 0.95)
        model.det_head.fcos_head.cls_logits.bias.data += target - q
        out = model.mask_branch.tower[-1]
        mf = model.mask_branch(feats, None)
        mean = mf.mean(dim=(0, 2, 3))
        std = mf.std(dim=(0, 2, 3))
        out.weight.data /= std[:, None, None, None]
        out.bias.data = (out.bias.data - mean) / std
        # The last dynamic bias adds to every mask logit: shift it so that MASK_FRACTION of
        # the proposals' mask pixels are foreground.
        feats = model.backbone(images.tensor)
        proposals, _ = model.det_head(images, feats, None, model.controller)
        inst = model._forward_mask_heads_test(proposals, model.mask_branch(feats, None))
        probs = inst.pred_global_masks.clamp(1e-7, 1 - 1e-7)
        logits = torch.log(probs / (1 - probs)).flatten()
        q = torch.quantile(logits[:: max(1, logits.numel() // 100000)], 1.0 - MASK_FRACTION)
        model.controller.out_conv.bias.data[-1] -= q


def swin_json(m):
    """MODEL.SWINT in the port's SwinConfig spelling (detectron2's stage2..stage5 are its
    stage1..stage4)."""
    return {
        "embed_dim": m.SWINT.EMBED_DIM,
        "depths": list(m.SWINT.DEPTHS),
        "num_heads": list(m.SWINT.NUM_HEADS),
        "window_size": m.SWINT.WINDOW_SIZE,
        "patch_size": m.SWINT.PATCH_SIZE,
        "mlp_ratio": float(m.SWINT.MLP_RATIO),
        "qkv_bias": True,
        "layer_norm_eps": 1e-5,
        "num_channels": 3,
        "out_features": [f"stage{int(s[len('stage'):]) - 1}" for s in m.SWINT.OUT_FEATURES],
        "use_absolute_embeddings": bool(m.SWINT.APE),
    }


def config_json(cfg, backbone):
    m = cfg.MODEL
    return {
        "swin": swin_json(m) if backbone == "swin" else None,
        "resnet": {
            "depth": m.RESNETS.DEPTH,
            "stem_out_channels": m.RESNETS.STEM_OUT_CHANNELS,
            "res2_out_channels": m.RESNETS.RES2_OUT_CHANNELS,
            "width_per_group": m.RESNETS.WIDTH_PER_GROUP,
            "stride_in_1x1": m.RESNETS.STRIDE_IN_1X1,
            "norm": m.RESNETS.NORM,
        },
        "fpn_out_channels": m.FPN.OUT_CHANNELS,
        "fcos": {
            "num_cls_convs": m.FCOS.NUM_CLS_CONVS,
            "num_box_convs": m.FCOS.NUM_BOX_CONVS,
            "num_share_convs": m.FCOS.NUM_SHARE_CONVS,
            "fpn_strides": list(m.FCOS.FPN_STRIDES),
            "inference_threshold": m.FCOS.INFERENCE_TH_TEST,
            "pre_nms_topk": m.FCOS.PRE_NMS_TOPK_TEST,
            "post_nms_topk": m.FCOS.POST_NMS_TOPK_TEST,
            "nms_threshold": m.FCOS.NMS_TH,
            "thresh_with_ctr": m.FCOS.THRESH_WITH_CTR,
        },
        "kernel_head": {"convs_dim": m.KERNEL_HEAD.CONVS_DIM, "num_convs": m.KERNEL_HEAD.NUM_CONVS},
        "mask_branch": {
            "channels": m.CONDINST.MASK_BRANCH.CHANNELS,
            "num_convs": m.CONDINST.MASK_BRANCH.NUM_CONVS,
            "out_channels": m.CONDINST.MASK_BRANCH.OUT_CHANNELS,
        },
        "mask_head": {
            "channels": m.CONDINST.MASK_HEAD.CHANNELS,
            "num_layers": m.CONDINST.MASK_HEAD.NUM_LAYERS,
        },
        "mask_out_stride": m.CONDINST.MASK_OUT_STRIDE,
        "pixel_mean": list(m.PIXEL_MEAN),
        "pixel_std": list(m.PIXEL_STD),
        "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
        "max_size_test": cfg.INPUT.MAX_SIZE_TEST,
    }


README = """# EntitySeg parity fixture (seed {seed}, backbone {backbone})

Made by `tests/oracle/entityseg/make_fixture.py --seed {seed} --backbone {backbone}` from the official code
(qqlu/Entity `Entity/EntitySeg`, `EntityFPN`, on detectron2), config `{config_file}` narrowed
with `{small}`, random weights (see `randomize`), CPU, float32. Images: {images}.

Files:
- `weights.pth`: `torch.save({{"model": state_dict}})`, the official detectron2 key layout
  (`backbone.bottom_up.*` (ResNet: `stem.*`, `resN.*`; Swin: `patch_embed.*`, `layers.*`,
  `norm{{i}}.*`, with each block's `attn.relative_position_index` buffer), `backbone.fpn_*`, `backbone.top_block.*`, `det_head.fcos_head.*`,
  `controller.*`, `mask_branch.*`, `mask_head.*` incl. the training-only `mask_head.stable.*`).
- `config.json`: every width/count/threshold of the model (read by the tests); `swin` is
  `MODEL.SWINT` in the port's `SwinConfig` spelling (null for ResNet).
- `cases.safetensors`: per case `c{{i}}.NAME` tensors; metadata `cases_json` lists the cases
  with their sizes.

Tensors per case (one image, batch 1):
- `image` u8 [H,W,3] RGB original; `image_resized` u8 [h,w,3] RGB after detectron2's
  `ResizeShortestEdge(min_size_test, max_size_test)` (PIL bilinear).
- `input` f32 [1,3,Hp,Wp]: BGR, `(x - pixel_mean) / pixel_std`, zero-padded to multiples of 32
  (`model.preprocess_image`).
- the bottom-up outputs named in the case's `bottom_up` list (`res2`..`res5` or
  `stage2`..`stage5`, `model.backbone.bottom_up`), `p2`..`p7` (`model.backbone`).
- `logits.pN`, `bbox_reg.pN` (after Scale and ReLU, before the stride), `ctrness.pN`,
  `controller.pN` (dynamic parameters per location): `fcos_head(levels, controller)` for p3..p7.
- `mask_feats` f32 [1,8,Hp/8,Wp/8]: `model.mask_branch(features)`.
- `proposal_boxes` [n,4] xyxy, `proposal_scores` [n] (sqrt(cls·ctr)), `proposal_locations`
  [n,2], `proposal_levels` i64 [n], `proposal_params` [n,P]: `model.det_head(...)` (threshold,
  top-k, NMS 0.6, post-NMS top-k), in its order.
- `mask_probs` f32 [n,1,Hp/4,Wp/4]: sigmoid of the dynamic mask head (`_forward_mask_heads_test`).
- `final_masks` u8 [k,H,W], `final_scores` [k], `final_boxes` [k,4]: `model([input])`, i.e.
  `EntityFPN.postprocess` at the original size (threshold 0.5, overlaps given to the higher
  score, masks whose exclusive part is a single row/column dropped, boxes from the masks).

Tolerances used by tests/entityseg.rs (measured on this fixture, f32 on CPU): see that file.
The proposals are in the official score order; scores of random-weight models can tie to
1e-8, so a port's own proposals are compared up to the order of scores that tie within the
score tolerance (1e-5), matched by level and location. Proposal boxes are
`location ± bbox_reg · stride` with `bbox_reg` held to 1e-5 of its largest value, and random
weights regress boxes far past the image (coordinates of thousands of pixels), so the box
tolerance is 1e-5 of the largest coordinate, at least 5e-3 px.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backbone", choices=sorted(CONFIG_FILES), default="r50")
    ap.add_argument("--out", required=True)
    ap.add_argument("--entity-src", required=True, help="checkout of qqlu/Entity")
    ap.add_argument("--detectron2-src", required=True, help="checkout of facebookresearch/detectron2")
    ap.add_argument(
        "--data",
        default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "shared", "data"),
    )
    ap.add_argument("--min-size", type=int, default=MIN_SIZE_TEST, help="INPUT.MIN_SIZE_TEST")
    ap.add_argument("--max-size", type=int, default=MAX_SIZE_TEST, help="INPUT.MAX_SIZE_TEST")
    args = ap.parse_args()
    torch.set_num_threads(2)
    sizes = {"INPUT.MIN_SIZE_TEST": args.min_size, "INPUT.MAX_SIZE_TEST": args.max_size}
    cfg, EntityFPN, T = import_official(args.entity_src, args.detectron2_src, args.backbone, sizes)
    torch.manual_seed(args.seed)
    model = EntityFPN(cfg).eval()
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        randomize(model, gen)
    imgs = images_for(args.seed, os.path.abspath(args.data))
    with torch.no_grad():
        calibrate(model, cfg, T, imgs[0][1])

    os.makedirs(args.out, exist_ok=True)
    tensors = {}
    cases = []
    for i, (name, rgb) in enumerate(imgs):
        def put(k, v, i=i):
            tensors[f"c{i}.{k}"] = v.detach().contiguous().clone()

        info = run_case(model, cfg, T, rgb, put)
        info["name"] = name
        info["prefix"] = f"c{i}."
        cases.append(info)
        print(name, info)

    from safetensors.torch import save_file

    save_file(tensors, os.path.join(args.out, "cases.safetensors"), metadata={"cases_json": json.dumps(cases)})
    torch.save({"model": model.state_dict()}, os.path.join(args.out, "weights.pth"))
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config_json(cfg, args.backbone), f, indent=1)
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(
            README.format(
                seed=args.seed,
                backbone=args.backbone,
                config_file=CONFIG_FILES[args.backbone],
                small=json.dumps({**SMALL_BACKBONE[args.backbone], **SMALL, **sizes}),
                images=", ".join(n for n, _ in imgs),
            )
        )


if __name__ == "__main__":
    main()
