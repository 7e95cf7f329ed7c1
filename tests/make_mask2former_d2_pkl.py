"""Writes the Mask2Former parity fixture's weights as a detectron2 ``model_final_*.pkl``.

The original Mask2Former release (facebookresearch/Mask2Former, detectron2) ships its
checkpoints as ``pickle`` files of ``{"model": {name: numpy.ndarray}, "__author__": ...}``
with detectron2 module names (``backbone.*``, ``sem_seg_head.pixel_decoder.*``,
``sem_seg_head.predictor.*``), Swin ``attn.qkv`` and the decoder self-attention ``in_proj``
fused. This script rebuilds that layout from the Hugging Face fixture so the Rust loader
(``deva::segmenter::mask2former::Mask2Former::load``) can be checked against real pickle bytes;
``tests/mask2former/d2.rs`` writes the same structure with a small Rust pickle writer, so CI
needs no Python.

Reference file used while developing the loader (not committed; weights are never
committed):

    "$(bash scripts/ref_venv.sh)"/bin/python tests/make_mask2former_d2_pkl.py \
        $DEVA_FIXTURES/mask2former/model.safetensors /tmp/m2f_fixture_d2.pkl
"""

import pickle
import re
import sys

import numpy as np
from safetensors.numpy import load_file


def d2_name(k):
    """detectron2 name of a Hugging Face key, with the q/k/v part index of fused keys."""
    if "swin.layernorm" in k:
        return None, None
    m = re.match(r"model\.pixel_level_module\.encoder\.(.*)", k)
    if m:
        r = m.group(1)
        m2 = re.match(r"hidden_states_norms\.stage(\d+)\.(.*)", r)
        if m2:
            return f"backbone.norm{int(m2.group(1)) - 1}.{m2.group(2)}", None
        for i, part in enumerate(("query", "key", "value")):
            if f".attention.self.{part}." in r:
                r = r.replace(f".attention.self.{part}.", ".attn.qkv.")
                return "backbone." + r.replace("encoder.layers.", "layers."), i
        for a, b in [
            ("embeddings.patch_embeddings.projection.", "patch_embed.proj."),
            ("embeddings.norm.", "patch_embed.norm."),
            ("encoder.layers.", "layers."),
            (".layernorm_before.", ".norm1."),
            (".layernorm_after.", ".norm2."),
            (".attention.self.relative_position_bias_table", ".attn.relative_position_bias_table"),
            (".attention.output.dense.", ".attn.proj."),
            (".intermediate.dense.", ".mlp.fc1."),
            (".output.dense.", ".mlp.fc2."),
        ]:
            r = r.replace(a, b)
        return "backbone." + r, None
    m = re.match(r"model\.pixel_level_module\.decoder\.(.*)", k)
    if m:
        r = m.group(1)
        if r == "level_embed":
            r = "transformer.level_embed"
        elif r.startswith("encoder."):
            for a, b in [("self_attn_layer_norm.", "norm1."), ("final_layer_norm.", "norm2."),
                         ("fc1.", "linear1."), ("fc2.", "linear2.")]:
                r = r.replace(a, b)
            r = "transformer." + r
        else:
            for a, b in [("input_projections.", "input_proj."), ("mask_projection.", "mask_features."),
                         ("adapter_1.0.", "adapter_1."), ("adapter_1.1.", "adapter_1.norm."),
                         ("layer_1.0.", "layer_1."), ("layer_1.1.", "layer_1.norm.")]:
                r = r.replace(a, b)
        return "sem_seg_head.pixel_decoder." + r, None
    p = "sem_seg_head.predictor"
    m = re.match(r"model\.transformer_module\.decoder\.layers\.(\d+)\.(.*)", k)
    if m:
        i, t = m.groups()
        m2 = re.match(r"self_attn\.([qkv])_proj\.(weight|bias)", t)
        if m2:
            return f"{p}.transformer_self_attention_layers.{i}.self_attn.in_proj_{m2.group(2)}", "qkv".index(m2.group(1))
        if t.startswith("self_attn_layer_norm."):
            return f"{p}.transformer_self_attention_layers.{i}.norm.{t.split('.', 1)[1]}", None
        if t.startswith("self_attn."):
            return f"{p}.transformer_self_attention_layers.{i}.{t}", None
        if t.startswith("cross_attn_layer_norm."):
            return f"{p}.transformer_cross_attention_layers.{i}.norm.{t.split('.', 1)[1]}", None
        if t.startswith("cross_attn."):
            return f"{p}.transformer_cross_attention_layers.{i}.multihead_attn.{t.split('.', 1)[1]}", None
        t = t.replace("fc1.", "linear1.").replace("fc2.", "linear2.").replace("final_layer_norm.", "norm.")
        return f"{p}.transformer_ffn_layers.{i}.{t}", None
    m = re.match(r"model\.transformer_module\.(.*)", k)
    if m:
        r = m.group(1)
        for a, b in [("decoder.layernorm.", "decoder_norm."),
                     ("decoder.mask_predictor.mask_embedder.", "mask_embed.layers."),
                     ("queries_features.", "query_feat."), ("queries_embedder.", "query_embed.")]:
            r = r.replace(a, b)
        r = r.replace(".0.weight", ".weight").replace(".0.bias", ".bias")
        return f"{p}.{r}", None
    if k.startswith("class_predictor."):
        return f"{p}.class_embed.{k.split('.', 1)[1]}", None
    return k, None


def main(src, dst):
    hf = load_file(src)
    model, fused = {}, {}
    for k in sorted(hf):
        name, part = d2_name(k)
        if name is None:
            continue
        if part is None:
            model[name] = hf[k]
        else:
            fused.setdefault(name, [None, None, None])[part] = hf[k]
    for name, parts in fused.items():
        model[name] = np.concatenate(parts, 0)
    model["pixel_mean"] = np.array([123.675, 116.28, 103.53], np.float32).reshape(3, 1, 1)
    model["pixel_std"] = np.array([58.395, 57.12, 57.375], np.float32).reshape(3, 1, 1)
    with open(dst, "wb") as f:
        pickle.dump({"model": model, "__author__": "deva test"}, f, protocol=2)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
