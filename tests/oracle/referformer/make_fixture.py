"""Parity fixture for the ReferFormer port: runs the official ReferFormer code
(github.com/wjn922/ReferFormer, path given with --referformer-src) on a small random-weight
configuration and writes the weights, a tiny RoBERTa (tokenizer + text model folder), the
cases with intermediates, config.json and a README.

Only the model construction is adapted, never the official modules' code:
- multi-scale deformable attention runs through the official PyTorch fallback
  `ms_deform_attn_core_pytorch` (no CUDA extension is built);
- `RobertaModel/RobertaTokenizerFast.from_pretrained('roberta-base')` are redirected to a
  small random RoBERTa saved beside the fixture (hidden size 768, which the official
  `FeatureResizer` requires);
- the torchvision ResNet-50 is built without downloading ImageNet weights;
- transformers 5 has no `batch_encode_plus`: the tokenizer instance gets it as an alias of
  its `__call__`;
- fvcore's `c2_xavier_fill` (an initialiser) is replaced by a local one when fvcore is absent.

With `--backbone swin` the visual backbone is the official `models/swin_transformer.py`
(`build_swin_backbone`, as `--backbone swin_t_p4w7` builds it) with its `swin_t_p4w7` entry
narrowed to SMALL_SWIN; with `--backbone video_swin` it is the official
`models/video_swin_transformer.py` (`build_video_swin_backbone`, as `--backbone
video_swin_b_p4w7` builds it, no pretrained weights loaded) with its `video_swin_b_p4w7` entry
narrowed to SMALL_VIDEO_SWIN; the default `resnet50` keeps the torchvision ResNet-50.

Usage: python make_fixture.py --seed 0 [--backbone resnet50|swin|video_swin] --out DIR --referformer-src PATH
"""
import argparse
import json
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DAVIS_CLIP = "blackswan"
EXPRESSIONS = ["a black swan swimming on the left", "the water behind the bird"]
# Swin-T's layout (4 stages, window 7, patch 4, all four outputs) at width 32 with 2 blocks per
# stage and head width 32; replaces the official `configs['swin_t_p4w7']` for --backbone swin.
SMALL_SWIN = dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7,
                  mlp_ratio=4., qkv_bias=True, qk_scale=None, drop_rate=0., attn_drop_rate=0.,
                  drop_path_rate=0.2, ape=False, patch_norm=True, out_indices=(0, 1, 2, 3),
                  use_checkpoint=False)
# Video-Swin-B's layout of ReferFormer's model zoo (temporal patch 1, window (8, 7, 7), patch
# norm) at the same small widths; replaces `configs['video_swin_b_p4w7']` for --backbone video_swin.
SMALL_VIDEO_SWIN = dict(patch_size=(1, 4, 4), embed_dim=32, depths=[2, 2, 2, 2],
                        num_heads=[1, 2, 4, 8], window_size=(8, 7, 7), mlp_ratio=4., qkv_bias=True,
                        qk_scale=None, drop_rate=0., attn_drop_rate=0., drop_path_rate=0.2,
                        patch_norm=True, use_checkpoint=False)
TRAIN_TEXT = """a black swan swims on the left of the lake. the white bird behind it is
standing on the grass. a man rides a bike on the dirt road. the dog runs after the red ball.
two people are dancing on the stage; the woman in a blue dress turns to the right.
the car drives along the street between the trees, and the water shines behind the bird."""


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", choices=["resnet50", "swin", "video_swin"], default="resnet50")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--referformer-src", type=Path, required=True)
    beside_repo = Path(__file__).resolve().parents[4] / "shared" / "data"
    p.add_argument("--data", type=Path, default=Path(os.environ.get("DEVA_DATA", beside_repo)))
    p.add_argument("--size", type=int, default=96, help="shorter side of the model input")
    return p.parse_args()


def install_stubs():
    """Modules the official code imports that are not needed here."""
    msda = types.ModuleType("MultiScaleDeformableAttention")
    sys.modules.setdefault("MultiScaleDeformableAttention", msda)
    try:
        import fvcore.nn.weight_init  # noqa: F401
    except ImportError:
        fv = types.ModuleType("fvcore")
        fvnn = types.ModuleType("fvcore.nn")
        wi = types.ModuleType("fvcore.nn.weight_init")

        def c2_xavier_fill(module):
            torch.nn.init.kaiming_uniform_(module.weight, a=1)
            if module.bias is not None:
                torch.nn.init.constant_(module.bias, 0)

        wi.c2_xavier_fill = c2_xavier_fill
        fvnn.weight_init = wi
        fv.nn = fvnn
        sys.modules.update({"fvcore": fv, "fvcore.nn": fvnn, "fvcore.nn.weight_init": wi})


def make_text_model(folder: Path, seed: int):
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator([TRAIN_TEXT], vocab_size=420, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = RobertaTokenizerFast(tokenizer_object=tok._tokenizer, bos_token="<s>", eos_token="</s>",
                                sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                                pad_token="<pad>", mask_token="<mask>")
    fast.save_pretrained(folder)
    torch.manual_seed(1000 + seed)
    cfg = RobertaConfig(vocab_size=len(fast), hidden_size=768, num_hidden_layers=2,
                        num_attention_heads=12, intermediate_size=96,
                        max_position_embeddings=40, type_vocab_size=1, pad_token_id=1,
                        bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
    model = RobertaModel(cfg)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name.endswith("bias"):
                prm.add_(0.05 * torch.randn_like(prm))
            if "LayerNorm.weight" in name:
                prm.add_(0.2 * torch.randn_like(prm))
    model.save_pretrained(folder)
    return folder


def small_args(size, backbone):
    return argparse.Namespace(
        backbone={"swin": "swin_t_p4w7", "video_swin": "video_swin_b_p4w7"}.get(backbone, "resnet50"),
        use_checkpoint=False, backbone_pretrained=None, dilation=False, lr_backbone=1e-5, masks=True, num=None,
        position_embedding="sine", hidden_dim=64, nheads=8, enc_layers=2, dec_layers=2,
        dim_feedforward=128, dropout=0.1, num_feature_levels=4, dec_n_points=4,
        enc_n_points=4, two_stage=False, num_queries=5, num_frames=1, mask_dim=16,
        controller_layers=3, dynamic_mask_channels=8, with_box_refine=True,
        freeze_text_encoder=False, rel_coord=True, num_classes=65, size=size)


def build_model(src: Path, text_dir: Path, args, seed: int):
    sys.path.insert(0, str(src))
    install_stubs()
    import models.backbone as backbone_mod
    import models.ops.modules.ms_deform_attn as msda_mod
    import models.referformer as rf
    from models.deformable_transformer import build_deforamble_transformer
    from models.ops.functions.ms_deform_attn_func import ms_deform_attn_core_pytorch

    class PyTorchMSDA:
        @staticmethod
        def apply(value, shapes, starts, locations, weights, im2col_step):
            return ms_deform_attn_core_pytorch(value, shapes, locations, weights)

    msda_mod.MSDeformAttnFunction = PyTorchMSDA
    backbone_mod.is_main_process = lambda: False

    from transformers import RobertaModel, RobertaTokenizerFast

    class Tok:
        @staticmethod
        def from_pretrained(_name, **kw):
            tok = RobertaTokenizerFast.from_pretrained(text_dir, **kw)
            # transformers 5 dropped `batch_encode_plus`; calling the tokenizer is the same.
            if not hasattr(tok, "batch_encode_plus"):
                object.__setattr__(tok, "batch_encode_plus", tok.__call__)
            return tok

    class Txt:
        @staticmethod
        def from_pretrained(_name, **kw):
            return RobertaModel.from_pretrained(text_dir, **kw)

    rf.RobertaTokenizerFast = Tok
    rf.RobertaModel = Txt
    torch.manual_seed(seed)
    if "video_swin" in args.backbone:
        import models.video_swin_transformer as vswin_mod
        vswin_mod.configs[args.backbone] = dict(SMALL_VIDEO_SWIN)
        backbone = vswin_mod.build_video_swin_backbone(args)
    elif "swin" in args.backbone:
        import models.swin_transformer as swin_mod
        swin_mod.configs[args.backbone] = dict(SMALL_SWIN)
        backbone = swin_mod.build_swin_backbone(args)
    else:
        backbone = backbone_mod.build_backbone(args)
    transformer = build_deforamble_transformer(args)
    model = rf.ReferFormer(
        backbone, transformer, num_classes=args.num_classes, num_queries=args.num_queries,
        num_feature_levels=args.num_feature_levels, num_frames=args.num_frames,
        mask_dim=args.mask_dim, dim_feedforward=args.dim_feedforward,
        controller_layers=args.controller_layers,
        dynamic_mask_channels=args.dynamic_mask_channels, aux_loss=False,
        with_box_refine=args.with_box_refine, two_stage=args.two_stage,
        freeze_text_encoder=args.freeze_text_encoder, rel_coord=args.rel_coord)
    model.eval()
    return model, rf


def perturb(model, seed):
    """Replaces constant-initialised tensors so that every parameter matters."""
    g = torch.Generator().manual_seed(2000 + seed)
    seen = set()
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if id(t) in seen or name.startswith("text_encoder.") or not t.is_floating_point():
                continue
            seen.add(id(t))
            n = lambda: torch.randn(t.shape, generator=g)
            if name.endswith("relative_position_bias_table"):
                t.copy_(n())
            elif name.startswith("backbone.") and t.dim() == 2 and name.endswith("weight"):
                # Swin's linear layers: unit gain instead of the initialiser's std 0.02.
                t.copy_(n() / math.sqrt(t.shape[1]))
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                t.copy_(0.1 * n())
            elif t.numel() > 1 and bool((t == t.flatten()[0]).all()):
                base = float(t.flatten()[0])
                sigma = 0.2 if base == 1.0 else 0.05
                if name.startswith("class_embed"):
                    sigma = 1.0
                t.copy_(base + sigma * n())


def procedural_image(rng, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([
        128 + 100 * np.sin(xx / (7 + 5 * rng.random()) + rng.random() * 6),
        128 + 100 * np.cos(yy / (9 + 5 * rng.random()) + rng.random() * 6),
        128 + 100 * np.sin((xx + yy) / (11 + 5 * rng.random())),
    ], -1)
    for _ in range(4):
        y0, x0 = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[y0:y0 + rng.integers(8, h // 2), x0:x0 + rng.integers(8, w // 2)] = rng.integers(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """torchvision `T.Resize(size)` on a PIL image (bilinear, PIL's antialiasing)."""
    import torchvision.transforms as T
    return T.Resize(size)(img)


# Tolerances the Rust parity test (tests/referformer.rs) applies, measured on these fixtures:
# max |rust - torch| / (max |torch| + 1e-6) per tensor, float32 on the CPU.
# (measured on seeds 0 and 1: text <= 6.6e-7, backbone <= 2.2e-6, transformer <= 8.7e-6,
# heads <= 4.5e-6, 0 selected-mask pixels differ; --backbone swin, seeds 0 and 1: text <= 8.1e-7,
# backbone <= 1.4e-6, transformer <= 2.5e-6, heads <= 7.4e-6, 0 selected-mask pixels differ;
# --backbone video_swin, seeds 0 and 1: text <= 8.1e-7, backbone <= 9.3e-7, transformer
# <= 2.7e-6, heads <= 3.6e-6, 0 selected-mask pixels differ).
TOLERANCES = {
    "input (normalisation of input_image)": 1e-6,
    "text_hidden, text_pooled, text_features, text_sentence": 1e-5,
    "backbone.res2..res5 (from the stored input)": 2e-5,
    "pos.res2..res5": 1e-5,
    "fused.0..3, memory.0..2, hs, init_reference, inter_references": 5e-5,
    "mask_features, pred_logits, pred_boxes, pred_masks": 5e-5,
    "selected_mask (fraction of pixels that differ; same best query)": 1e-3,
    "input_image vs our resize of image (grey levels, absolute)": 1,
}


def write_readme(out, a, cases, sd):
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "README.md")
    rows = "\n".join(f"| `{p.relative_to(out)}` | {p.stat().st_size} |" for p in files)
    case_rows = "\n".join(
        f"- `{c}`: \"{v['expression']}\" on {v['source']}, input {v['input_size'][1]}x"
        f"{v['input_size'][0]}, original {v['original_size'][1]}x{v['original_size'][0]}, best "
        f"query {v['best_query']} (score {v['best_score']:.4f})" for c, v in cases.items())
    tol = "\n".join(f"| {k} | {v:g} |" for k, v in TOLERANCES.items())
    backbone = ("Swin (official `models/swin_transformer.py`, `swin_t_p4w7` narrowed to "
                f"{SMALL_SWIN['embed_dim']} channels, depths {SMALL_SWIN['depths']}, heads "
                f"{SMALL_SWIN['num_heads']}, window {SMALL_SWIN['window_size']})"
                if a.backbone == "swin" else
                "Video-Swin (official `models/video_swin_transformer.py`, `video_swin_b_p4w7` "
                f"narrowed to {SMALL_VIDEO_SWIN['embed_dim']} channels, depths "
                f"{SMALL_VIDEO_SWIN['depths']}, heads {SMALL_VIDEO_SWIN['num_heads']}, patch "
                f"{SMALL_VIDEO_SWIN['patch_size']}, window {SMALL_VIDEO_SWIN['window_size']}; one "
                "frame per forward)" if a.backbone == "video_swin" else "torchvision ResNet-50")
    text = f"""# ReferFormer parity fixture (seed {a.seed}, backbone {a.backbone})

Backbone: {backbone}.

Made by `tests/oracle/referformer/make_fixture.py --seed {a.seed} --backbone {a.backbone} --out <dir>
--referformer-src <ReferFormer checkout>` (input shorter side {a.size}) from the official
ReferFormer code (`models/referformer.py` and the modules it builds), PyTorch
{torch.__version__}, CPU, float32, one thread. Weights are random (see the script); every
size is in `config.json` and in the tensors' shapes.

## Files

| file | bytes |
| --- | --- |
{rows}

- `weights.pth`: `torch.save({{"model": model.state_dict()}})`, the official key layout
  ({len(sd)} keys, RoBERTa included as `text_encoder.*`; `bbox_embed.i` and
  `transformer.decoder.bbox_embed.i` are the same tensors, stored under both names as
  PyTorch does).
- `tokenizer.json` (= `text/tokenizer.json`): a byte-level BPE tokenizer trained by the
  `tokenizers` package on a short text, RoBERTa's special tokens `<s>`=0, `<pad>`=1,
  `</s>`=2, `<unk>`=3, `<mask>`=4 and its post-processor; `text/` also holds the
  `RobertaConfig` and tokenizer configuration the official code loaded with
  `from_pretrained` (hidden size 768 as `FeatureResizer` requires, 2 layers, 12 heads, FFN 96,
  40 positions, LayerNorm eps 1e-5).
- `cases.safetensors`: per case `caseN.<name>`, JSON metadata `cases_json`.

## Calls

`model([input[None]], [expression], [{{"size": (h, w)}}])` in eval mode, `num_frames` 1.
Intermediates come from forward hooks: `backbone` (features, positions), `text_encoder`,
`resizer` (words, then sentence), `fusion_module` (the 4 fused levels), `transformer`
(`hs`, memory maps, reference points), `pixel_decoder` (mask features).

## Tensors of each case

| name | content |
| --- | --- |
| `image` | original frame, uint8 HxWx3 |
| `input_image` | `T.Resize({a.size})(PIL image)`, uint8 |
| `input` | `(input_image / 255 - mean) / std`, `[3, h, w]` |
| `input_ids` | `RobertaTokenizerFast` ids of the expression (`<s> ... </s>`) |
| `text_hidden`, `text_pooled` | RoBERTa `last_hidden_state[0]`, `pooler_output[0]` |
| `text_features`, `text_sentence` | after `resizer` (Linear + LayerNorm eps 1e-12) |
| `backbone.res2..res5`, `pos.res2..res5` | backbone maps at strides 4..32 (ResNet-50 stages, or the Swin stage outputs after their norms) and their sine position embeddings |
| `fused.0..3` | `fusion_module` outputs `[h_l*w_l, d]` of the 4 transformer levels |
| `memory.0..2` | encoder memory as maps `[d, h_l, w_l]` (strides 8, 16, 32) |
| `hs` | decoder output per layer `[layers, q, d]` |
| `init_reference`, `inter_references` | `[q, 2]`, `[layers, q, 4]` |
| `mask_features` | `pixel_decoder` output `[mask_dim, h/4, w/4]` |
| `pred_logits`, `pred_boxes`, `pred_masks` | last layer `[q, classes]`, `[q, 4]`, `[q, h/4, w/4]` |
| `scores` | `sigmoid(pred_logits).max(-1)` |
| `best_query` | argmax of `scores` |
| `selected_prob`, `selected_mask` | `sigmoid(interpolate(pred_masks[best], original size, bilinear, align_corners=False))`, and `> 0.5` |

## Cases

{case_rows}

## Tolerances (tests/referformer.rs)

Relative: `max |rust - torch| / max |torch|` per tensor; token ids and the best query exact.

| tensors | tolerance |
| --- | --- |
{tol}
"""
    (out / "README.md").write_text(text)


def main():
    a = parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    out = a.out
    out.mkdir(parents=True, exist_ok=True)
    text_dir = make_text_model(out / "text", a.seed)
    args = small_args(a.size, a.backbone)
    model, rf = build_model(a.referformer_src, text_dir, args, a.seed)
    perturb(model, a.seed)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save({"model": sd}, out / "weights.pth")

    captured = {}

    def keep(name):
        def hook(_m, _i, o):
            captured.setdefault(name, []).append(o)
        return hook

    model.backbone.register_forward_hook(keep("backbone"))
    model.text_encoder.register_forward_hook(keep("text_encoder"))
    model.resizer.register_forward_hook(keep("resizer"))
    model.fusion_module.register_forward_hook(keep("fusion"))
    model.transformer.register_forward_hook(keep("transformer"))
    model.pixel_decoder.register_forward_hook(keep("pixel_decoder"))

    rng = np.random.default_rng(a.seed)
    tensors, cases = {}, {}
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    for ci, expr in enumerate(EXPRESSIONS):
        if a.seed == 0:
            path = a.data / "davis16" / "JPEGImages" / "480p" / DAVIS_CLIP / f"{ci * 10:05d}.jpg"
            original = Image.open(path).convert("RGB")
            source = f"DAVIS-16 {DAVIS_CLIP}/{path.name}"
        else:
            # Landscape or portrait, drawn from the seed.
            h, w = int(rng.integers(90, 200)), int(rng.integers(90, 200))
            original = Image.fromarray(procedural_image(rng, h, w))
            source = f"procedural {w}x{h} (numpy seed {a.seed})"
        resized = resize_shorter(original, a.size)
        inp = torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float() / 255.0
        inp = (inp - mean) / std
        ih, iw = inp.shape[-2:]
        captured.clear()
        tokenized = model.tokenizer([expr], padding="longest", return_tensors="pt")
        with torch.no_grad():
            outputs = model([inp[None]], [expr], [{"size": torch.as_tensor([ih, iw])}])
        c = f"case{ci}"
        feats, pos = captured["backbone"][0]
        enc = captured["text_encoder"][0]
        text_words, text_sentence = captured["resizer"][0], captured["resizer"][1]
        hs, memory, init_ref, inter_refs = captured["transformer"][0][:4]
        pred_logits = outputs["pred_logits"][0, 0]
        pred_boxes = outputs["pred_boxes"][0, 0]
        pred_masks = outputs["pred_masks"][0, 0]
        scores = pred_logits.sigmoid().max(-1).values
        best = int(scores.argmax())
        ow, oh = original.size
        up = F.interpolate(pred_masks[best][None, None], size=(oh, ow), mode="bilinear",
                           align_corners=False)[0, 0]
        t = {
            "image": torch.from_numpy(np.asarray(original).copy()),
            "input_image": torch.from_numpy(np.asarray(resized).copy()),
            "input": inp,
            "input_ids": tokenized["input_ids"][0],
            "text_hidden": enc.last_hidden_state[0],
            "text_pooled": enc.pooler_output[0],
            "text_features": text_words[0],
            "text_sentence": text_sentence[0],
            "hs": hs[:, 0],
            "init_reference": init_ref[0],
            "inter_references": inter_refs[:, 0],
            "mask_features": captured["pixel_decoder"][0][0],
            "pred_logits": pred_logits,
            "pred_boxes": pred_boxes,
            "pred_masks": pred_masks,
            "scores": scores,
            "best_query": torch.tensor(best, dtype=torch.int64),
            "selected_mask": (up.sigmoid() > 0.5).to(torch.uint8),
            "selected_prob": up.sigmoid(),
        }
        for i, f in enumerate(feats):
            t[f"backbone.res{i + 2}"] = f.tensors[0]
            t[f"pos.res{i + 2}"] = pos[i][0]
        for i, s in enumerate(captured["fusion"]):
            t[f"fused.{i}"] = s[:, 0]
        for i, m in enumerate(memory):
            t[f"memory.{i}"] = m[0]
        for k, v in t.items():
            tensors[f"{c}.{k}"] = v.detach().contiguous()
        cases[c] = {"expression": expr, "source": source, "input_size": [ih, iw],
                    "original_size": [oh, ow], "best_query": best,
                    "best_score": float(scores[best])}
    from safetensors.torch import save_file
    save_file(tensors, out / "cases.safetensors", metadata={"cases_json": json.dumps({"cases": cases})})
    config = {k: v for k, v in vars(args).items()}
    if a.backbone == "swin":
        config["swin"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in SMALL_SWIN.items()}
    if a.backbone == "video_swin":
        config["video_swin"] = {k: (list(v) if isinstance(v, tuple) else v)
                                for k, v in SMALL_VIDEO_SWIN.items()}
    config.update({"text_model": "text", "seed": a.seed, "image_mean": [0.485, 0.456, 0.406],
                   "image_std": [0.229, 0.224, 0.225], "mask_out_stride": 4,
                   "mask_threshold": 0.5})
    (out / "config.json").write_text(json.dumps(config, indent=1))
    os.chmod(out / "cases.safetensors", 0o644)
    # The Rust side reads the tokenizer beside the weights; the text weights live in
    # weights.pth (`text_encoder.*`), so the folder's copy is dropped.
    (out / "tokenizer.json").write_bytes((text_dir / "tokenizer.json").read_bytes())
    (text_dir / "model.safetensors").unlink()
    write_readme(out, a, cases, sd)
    print(json.dumps(cases, indent=1))
    keys = sorted(sd)
    print(len(keys), "state-dict keys;", sum(v.numel() for v in sd.values()), "values")


if __name__ == "__main__":
    main()
