"""Writes small training checkpoints with the structure of the official ReferFormer and
EntitySeg (detectron2) model-zoo files, and what torch reads back from them.

Why: the released checkpoints are not only state dicts. ReferFormer's ``main.py``,
``main_pretrain.py`` and ``main_joint.py`` save, through ``util.misc.save_on_master`` (which
passes ``_use_new_zipfile_serialization=False``, the legacy non-zip format):

    {'model': state_dict, 'optimizer': AdamW state, 'lr_scheduler': MultiStepLR state
     (its 'milestones' a collections.Counter), 'epoch': int, 'args': argparse.Namespace}

EntitySeg trains with detectron2's ``DefaultTrainer`` at the commit its README names
(28174e93): ``DetectionCheckpointer(model, dir, trainer=...)`` saves, in the zip format,

    {'model': state_dict, 'trainer': {'iteration': int, 'hooks': {'LRScheduler':
     {'base_lrs': [...], 'last_epoch': int}}}, 'iteration': int}

This script writes both shapes with a tiny model (a few kB each) so the Rust reader can be
checked against bytes torch itself wrote:

    referformer_legacy.pth   the ReferFormer shape, legacy format (as the scripts save)
    referformer_zip.pth      the same object in the zip format
    detectron2_zip.pth       the detectron2 shape, zip format
    expected.json            {file: {tensor name: {"shape": [...], "values": [...]}}} of the
                             'model' entry, as torch.load reads it (row-major)

The model's tensors include a transposed (non-contiguous) view and two views of one storage,
as state dicts of real models may. ``args`` is the real ReferFormer argument parser's
Namespace (``opts.get_args_parser`` of a wjn922/ReferFormer checkout given by --referformer),
with the attributes main.py and ``init_distributed_mode`` add.

    "$(bash scripts/ref_venv.sh)"/bin/python tests/oracle/checkpoints/make_training_checkpoints.py \
        --referformer /path/to/ReferFormer --out tests/data/training_checkpoints
"""

import argparse
import collections
import json
import os
import sys

import torch


def tiny_model():
    torch.manual_seed(0)
    m = torch.nn.Sequential(
        collections.OrderedDict(
            [
                ("class_embed", torch.nn.Linear(3, 2)),
                ("norm", torch.nn.BatchNorm1d(2)),
            ]
        )
    )
    return m


def model_state(m):
    sd = m.state_dict()
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 4 - 1
    # A transposed view and two views of one storage (offset slices).
    sd["transformer.level_embed"] = base.t()
    sd["query_embed.weight"] = base[1:]
    sd["text_encoder.embeddings.position_ids"] = torch.arange(5).unsqueeze(0)
    return sd


def referformer_args(src):
    sys.path.insert(0, src)
    import opts  # noqa: E402  (the official argument parser)

    parser = argparse.ArgumentParser(
        "ReferFormer training and evaluation script", parents=[opts.get_args_parser()]
    )
    args = parser.parse_args(["--dataset_file", "ytvos", "--with_box_refine", "--binary"])
    # What main.py and util.misc.init_distributed_mode set on it.
    args.masks = True
    args.distributed = False
    args.rank, args.world_size, args.gpu = 0, 1, 0
    args.dist_url, args.dist_backend = "env://", "nccl"
    return args


def referformer_checkpoint(m, args):
    opt = torch.optim.AdamW(m.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, args.lr_drop)
    m(torch.ones(2, 3)).sum().backward()
    opt.step()
    sched.step()
    return {
        "model": model_state(m),
        "optimizer": opt.state_dict(),
        "lr_scheduler": sched.state_dict(),
        "epoch": 5,
        "args": args,
    }


def detectron2_checkpoint(m):
    return {
        "model": model_state(m),
        "trainer": {
            "iteration": 89999,
            "hooks": {"LRScheduler": {"base_lrs": [0.01, 0.01], "last_epoch": 89999}},
        },
        "iteration": 89999,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--referformer", required=True, help="wjn922/ReferFormer checkout")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    m = tiny_model()
    ref = referformer_checkpoint(m, referformer_args(a.referformer))
    files = {
        "referformer_legacy.pth": (ref, False),
        "referformer_zip.pth": (ref, True),
        "detectron2_zip.pth": (detectron2_checkpoint(m), True),
    }
    expected = {}
    for name, (obj, zipped) in files.items():
        path = os.path.join(a.out, name)
        torch.save(obj, path, _use_new_zipfile_serialization=zipped)
        back = torch.load(path, map_location="cpu", weights_only=False)["model"]
        expected[name] = {
            k: {"shape": list(v.shape), "values": v.contiguous().flatten().tolist()}
            for k, v in back.items()
        }
    with open(os.path.join(a.out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
