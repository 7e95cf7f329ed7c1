"""Oracle for the Mask2Former port with a ResNet backbone (detectron2's R50 family).

Runs Hugging Face transformers' ``Mask2FormerForUniversalSegmentation`` with a small
``ResNetConfig`` backbone (bottleneck blocks, stride in the 3x3 convolution, as detectron2's
R50) and random weights, and writes a folder in the layout of ``$DEVA_FIXTURES/mask2former``
(see its README): ``config.json`` and ``model.safetensors`` from ``save_pretrained``, and
``cases.safetensors`` with the processor's inputs, the backbone maps, the pixel-decoder
outputs, every decoder stage's class logits and hidden states, the final logits and the
panoptic / instance post-processing results, with the same ``cases_json`` metadata. The
stage attention masks are not stored (the parity tests skip absent ones).

Usage (needs torch, transformers, safetensors, pillow):

    python3 tests/oracle/mask2former_r50/make_fixture.py --seed 37 --out /tmp/mask2former_r50 \
        IMAGE [IMAGE ...]

Each IMAGE becomes a case, reduced so that its longer side is 427 pixels (PIL bicubic). The
parity tests of ``tests/mask2former`` run on the folder when it is named ``mask2former`` under
``DEVA_FIXTURES`` (for example a temporary root with a symbolic link).
"""
import argparse
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import (Mask2FormerConfig, Mask2FormerForUniversalSegmentation,
                          Mask2FormerImageProcessor, ResNetConfig)

LABELS = ["person", "horse", "dog", "car", "bicycle", "bird", "sky", "grass", "tree", "road"]
STUFF = [6, 7, 8, 9]
SIZE = {"longest_edge": 384, "shortest_edge": 256}
PANOPTIC = dict(threshold=0.5, mask_threshold=0.5, overlap_mask_area_threshold=0.5)
INSTANCE = dict(threshold=0.6)


def make_model(seed):
    backbone = ResNetConfig(embedding_size=16, hidden_sizes=[32, 64, 128, 256], depths=[2, 1, 2, 1],
                            layer_type="bottleneck", hidden_act="relu",
                            downsample_in_first_stage=False, downsample_in_bottleneck=False,
                            out_features=["stage1", "stage2", "stage3", "stage4"])
    config = Mask2FormerConfig(backbone_config=backbone, feature_size=32, mask_feature_size=32,
                               hidden_dim=32, encoder_layers=2, encoder_feedforward_dim=128,
                               decoder_layers=3, dim_feedforward=128, num_attention_heads=4,
                               num_queries=20, id2label=dict(enumerate(LABELS)),
                               label2id={n: i for i, n in enumerate(LABELS)}, use_pretrained_backbone=False)
    torch.manual_seed(seed)
    model = Mask2FormerForUniversalSegmentation(config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        # Constant tensors (norm weights and biases, BatchNorm statistics, zero biases) get
        # noise so that every one of them influences the outputs.
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point() or t.numel() == 0:
                continue
            if bool((t == t.flatten()[0]).all()):
                noise = torch.randn(t.shape, generator=g)
                if name.endswith("running_var"):
                    t.copy_(1.0 + 0.3 * noise.abs())
                elif name.endswith("running_mean"):
                    t.add_(0.1 * noise)
                elif name.endswith("weight"):
                    t.add_(0.2 * noise)
                else:
                    t.add_(0.05 * noise)
        model.class_predictor.weight.normal_(0.0, 1.5, generator=g)
        model.model.pixel_level_module.decoder.mask_projection.weight.normal_(0.0, 1.0, generator=g)
    return model


def load_image(path):
    img = Image.open(path).convert("RGB")
    s = 427 / max(img.size)
    return img.resize((round(img.width * s), round(img.height * s)), Image.BICUBIC)


def post_tensors(prefix, result, out, topk=None):
    out[f"{prefix}.segmentation"] = result["segmentation"].to(torch.int32).contiguous()
    segs = result["segments_info"]
    out[f"{prefix}.segments.id"] = torch.tensor([s["id"] for s in segs], dtype=torch.int64)
    out[f"{prefix}.segments.label_id"] = torch.tensor([s["label_id"] for s in segs], dtype=torch.int64)
    out[f"{prefix}.segments.score"] = torch.tensor([s["score"] for s in segs], dtype=torch.float32)
    out[f"{prefix}.segments.was_fused"] = torch.tensor([int(s["was_fused"]) for s in segs], dtype=torch.uint8)
    if topk is not None:
        out[f"{prefix}.topk_indices"] = topk
    return [{k: (bool(v) if k == "was_fused" else v) for k, v in s.items()} for s in segs]


def topk_order(class_logits, sorted_):
    scores = torch.nn.functional.softmax(class_logits[0], dim=-1)[:, :-1]
    return scores.flatten(0, 1).topk(class_logits.shape[1], sorted=sorted_)[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=37)
    ap.add_argument("--out", required=True)
    ap.add_argument("images", nargs="+")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = make_model(a.seed)
    processor = Mask2FormerImageProcessor(size=SIZE)
    cases, post = {}, {}
    for k, path in enumerate(a.images):
        img = load_image(path)
        c = f"case{k}"
        cases[f"{c}.image"] = torch.from_numpy(np.asarray(img).copy())
        inputs = processor(images=img, return_tensors="pt")
        pv = inputs["pixel_values"]
        with torch.no_grad():
            if k == 0:
                # Centre the class logits over the queries so that no class wins everywhere.
                logits = model(pixel_values=pv).class_queries_logits[0]
                model.class_predictor.bias.sub_(logits.mean(0) - logits.mean())
            inner = model.model(pixel_values=pv, output_hidden_states=True)
            outputs = model(pixel_values=pv)
        cases[f"{c}.target_sizes"] = torch.tensor([[img.height, img.width]], dtype=torch.int64)
        cases[f"{c}.pixel_values"] = pv.contiguous()
        cases[f"{c}.pixel_mask"] = inputs["pixel_mask"].to(torch.uint8)
        if k == 0:
            for i, f in enumerate(inner.encoder_hidden_states):
                cases[f"{c}.backbone.feature_map.{i}"] = f.contiguous()
            cases[f"{c}.pixel_decoder.mask_features"] = inner.pixel_decoder_last_hidden_state.contiguous()
            for i, f in enumerate(inner.pixel_decoder_hidden_states):
                cases[f"{c}.pixel_decoder.multi_scale_features.{i}"] = f.contiguous()
        states = torch.stack([s.transpose(0, 1) for s in inner.transformer_decoder_intermediate_states])
        with torch.no_grad():
            cases[f"{c}.transformer_decoder.class_logits_per_stage"] = model.class_predictor(states).contiguous()
        cases[f"{c}.transformer_decoder.intermediate_hidden_states"] = states.contiguous()
        cases[f"{c}.transformer_decoder.last_hidden_state"] = inner.transformer_decoder_last_hidden_state.contiguous()
        cases[f"{c}.class_queries_logits"] = outputs.class_queries_logits.contiguous()
        cases[f"{c}.masks_queries_logits"] = outputs.masks_queries_logits.contiguous()
        cases[f"{c}.label_ids_to_fuse"] = torch.tensor(STUFF, dtype=torch.int64)
        sizes = [(img.height, img.width)]
        pan = processor.post_process_panoptic_segmentation(
            outputs, label_ids_to_fuse=set(STUFF), target_sizes=sizes, **PANOPTIC)[0]
        inst = processor.post_process_instance_segmentation(outputs, target_sizes=sizes, **INSTANCE)[0]
        original = torch.Tensor.topk
        torch.Tensor.topk = lambda self, *args, **kw: original(self, *args, **{**kw, "sorted": True})
        try:
            inst_sorted = processor.post_process_instance_segmentation(outputs, target_sizes=sizes, **INSTANCE)[0]
        finally:
            torch.Tensor.topk = original
        logits = outputs.class_queries_logits
        post[c] = {
            "panoptic": post_tensors(f"{c}.post_panoptic", pan, cases),
            "instance": post_tensors(f"{c}.post_instance", inst, cases, topk_order(logits, False)),
            "instance_sorted": post_tensors(f"{c}.post_instance_sorted", inst_sorted, cases,
                                            topk_order(logits, True)),
        }
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out)
    import transformers
    meta = {"format": "mask2former-r50-oracle", "seed": a.seed,
            "transformers_version": transformers.__version__, "torch_version": torch.__version__,
            "size": SIZE, "panoptic_kwargs": PANOPTIC, "instance_kwargs": INSTANCE,
            "label_ids_to_fuse": STUFF, "postprocess": post}
    save_file(cases, os.path.join(a.out, "cases.safetensors"), metadata={"cases_json": json.dumps(meta)})
    print(f"wrote {len(a.images)} cases to {a.out}")


if __name__ == "__main__":
    main()
