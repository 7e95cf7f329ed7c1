#!/usr/bin/env bash
# Fuzzes one reader of untrusted input for a while:
#
#   scripts/fuzz.sh TARGET SECONDS [LIBFUZZER_FLAGS...]   (targets: scripts/fuzz.sh list)
#
# e.g. `scripts/fuzz.sh pickle 1800 -runs=1000000` stops at 1,000,000 executions or 30 minutes.
# Inputs are capped per target (-max_len below: a little over the largest useful seed, so
# executions are not spent on huge inputs); a -max_len among the flags overrides it.
#
# Installs cargo-fuzz when it is missing. cargo-fuzz needs nightly compiler flags; on a stable
# toolchain RUSTC_BOOTSTRAP=1 unlocks them. Seeds come from the fixtures and data beside the
# repository ($DEVA_FIXTURES, $DEVA_DATA, default ../shared/...), copied into
# fuzz/corpus/TARGET (ignored by git); crashes land in fuzz/artifacts/TARGET. The last line
# printed is libFuzzer's summary with the number of executions. FUZZ_SANITIZER=address turns
# AddressSanitizer on (default none: the code under test is safe Rust, and it runs 2-3x faster).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^deva-fuzz$')
if [ "${1:-}" = list ] || [ $# -lt 1 ]; then
    echo "usage: scripts/fuzz.sh TARGET SECONDS; targets:" $targets
    exit $([ "${1:-}" = list ] && echo 0 || echo 2)
fi
target=$1
seconds=${2:-60}
shift $(($# < 2 ? $# : 2))
echo "$targets" | grep -qx "$target" || { echo "unknown target $target; targets:" $targets; exit 2; }

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
# The file-based targets write each input to a scratch file: keep it in memory when possible.
[ -w /dev/shm ] && export TMPDIR=${TMPDIR:-/dev/shm}

fixtures=${DEVA_FIXTURES:-$root/../shared/fixtures}
data=${DEVA_DATA:-$root/../shared/data}
export DEVA_FUZZ_TOKENIZER=${DEVA_FUZZ_TOKENIZER:-$fixtures/grounding_dino/tokenizer.json}
corpus=corpus/$target
mkdir -p "$corpus"

# Copies up to 100 files (smaller than 256 KiB) that `find` selects into the corpus.
seed_files() {
    # (find is stopped by SIGPIPE once head has its 100 files: not a failure.)
    { find "$fixtures" "$data" "$root/configs" "$@" -type f -size -256k 2>/dev/null || true; } |
        head -n 100 |
        while read -r f; do cp "$f" "$corpus/seed-$(echo "$f" | cksum | cut -d' ' -f1)"; done
}

case $target in
    index_png | detections)
        seed_files -name '*.png'
        # Small copies of those masks (same PNG colour type and palette, at most 32×24 pixels)
        # plus 16-bit, anti-aliased and RGB-id masks, when the interpreter has Pillow and numpy:
        # full-size masks cost milliseconds per execution.
        "${DEVA_PYTHON:-python3}" - "$target" "$corpus" <<'PY' || echo "no small PNG seeds (needs Pillow, numpy)"
import glob, io, json, os, sys
import numpy as np
from PIL import Image
target, corpus = sys.argv[1:]
def put(name, png, ids=()):
    b = io.BytesIO()
    png.save(b, format="PNG")
    data = b.getvalue()
    if target == "detections" and ids:
        segs = [{"id": int(i), "category_id": int(i) % 7, "isthing": bool(i % 2), "score": 0.5}
                for i in ids]
        data += b"\0JSON\0" + json.dumps(segs).encode()
    with open(os.path.join(corpus, "seed-small-" + name), "wb") as f:
        f.write(data)
for p in sorted(glob.glob(corpus + "/seed-[0-9]*")):
    try:
        im = Image.open(p)
        im.load()
    except Exception:
        continue
    im = im.crop((0, 0, min(im.width, 32), min(im.height, 24)))
    a = np.asarray(im)
    ids = [int(v) for v in np.unique(a) if v] if a.ndim == 2 else [1, 2]
    put(os.path.basename(p)[5:], im, ids[:20])
y, x = np.mgrid[0:24, 0:32]
disc = ((x - 16) ** 2 + (y - 12) ** 2 < 64)
put("u16", Image.fromarray((disc * 65535).astype(np.uint16)), [1])
put("aa", Image.fromarray(np.clip(255 - 40 * np.abs(np.hypot(x - 16, y - 12) - 8), 0, 255).astype(np.uint8)), [1])
rgb = np.zeros((24, 32, 3), np.uint8)
rgb[disc] = (128, 0, 0)
rgb[:6, :6] = (0, 128, 0)
put("rgb", Image.fromarray(rgb), [1, 2])
pal = Image.fromarray((disc + (x > 20)).astype(np.uint8), mode="P")
pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])
put("pal", pal, [1, 2])
PY
        ;;
    config_toml) seed_files -name '*.toml' ;;
    burst_json) seed_files -path '*burst*' -name '*.json' ;;
    vipseg_json) seed_files -path '*vipseg*' -name '*.json' ;;
    onnx) seed_files -name '*.onnx' ;;
    prompt)
        for p in person.hat.horse "a cat . a dog ." "  .. red car.  " "İstanbul. naïve café." \
            "what?is.this" "[CLS] . [SEP]" "x.x.x.x.x.x.x.x"; do
            printf '%s' "$p" > "$corpus/seed-$(printf '%s' "$p" | cksum | cut -d' ' -f1)"
        done
        ;;
    pickle | pkl | pth | safetensors | coco_rle | frame_stream)
        # numpy makes the .pkl seeds when the interpreter ($DEVA_PYTHON) has it.
        "${DEVA_PYTHON:-python3}" - "$target" "$corpus" "$fixtures" "$data" <<'PY'
import glob, json, os, pickle, struct, sys, zipfile
target, corpus, fixtures, data = sys.argv[1:]
def put(name, b):
    with open(os.path.join(corpus, "seed-" + name), "wb") as f:
        f.write(b)
files = glob.glob(fixtures + "/**/*", recursive=True) + glob.glob(data + "/**/*", recursive=True)
try:
    import torch
except ImportError:
    torch = None
if torch is not None and target in ("pickle", "pth"):
    # Small checkpoints: every seed from the fixtures is a 30-70 KB pickle.
    import io
    sd = {"model": {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.zeros(2),
                    "n": torch.tensor([1, 2], dtype=torch.int64), "h": torch.ones(3).half(),
                    "t": torch.arange(12.0).reshape(3, 4).t(), "b": torch.tensor([True])},
          "epoch": 3, "cfg": ("x", 1.5, None, [1, 2])}
    for i, obj in enumerate([sd, sd["model"], {"state_dict": sd["model"]}]):
        b = io.BytesIO()
        torch.save(obj, b)
        if target == "pth":
            put(f"torch{i}", b.getvalue())
            legacy = io.BytesIO()  # the pre-1.6 format: pickles and raw storages, no zip
            torch.save(obj, legacy, _use_new_zipfile_serialization=False)
            put(f"legacy{i}", legacy.getvalue())
        else:
            with zipfile.ZipFile(b) as z:
                put(f"torch{i}", z.read([n for n in z.namelist() if n.endswith("data.pkl")][0]))
for i, p in enumerate(f for f in files if f.endswith(".pth")):
    with zipfile.ZipFile(p) as z:
        pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
        if target in ("pickle", "pkl"):
            put(f"pkl{i}", z.read(pkl))
        elif target == "pth":  # a small archive with the same pickle and no storages
            out = os.path.join(corpus, f"seed-pth{i}")
            with zipfile.ZipFile(out, "w") as o:
                o.writestr("archive/data.pkl", z.read(pkl))
if target == "pkl":
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None:
        a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        arrays = {"w": a, "t": a.transpose(2, 0, 1), "f": np.asfortranarray(a[0]),
                  "h": a.astype(np.float16), "i": np.arange(5), "b": np.array([True, False]),
                  "s": np.float64(2.5), "e": np.zeros((0, 3), np.int8)}
        for proto in (2, 3, 4, 5):
            put(f"np{proto}", pickle.dumps({"model": {"sem_seg_head": arrays}, "__author__": "x"},
                                           protocol=proto))
for i, p in enumerate(f for f in files if f.endswith(".safetensors")):
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = f.read(n)
    if target == "safetensors":
        put(f"st{i}", header + b"\0DATA\0" + bytes(64))
    elif target == "pth":
        put(f"st{i}", struct.pack("<Q", n) + header)
if target == "coco_rle":
    for p in [f for f in files if f.endswith(".json") and "burst" in f][:20]:
        for j, m in enumerate(__import__("re").findall(rb'"rle":\s*"([^"]*)"', open(p, "rb").read())[:5]):
            put(f"rle{abs(hash((p, j)))}", bytes([40, 60]) + m.replace(b"\\\\", b"\\"))
if target == "frame_stream":
    put("probe", json.dumps({"streams": [{"width": 8, "height": 6, "avg_frame_rate": "30000/1001",
        "nb_frames": "20", "side_data_list": [{"rotation": -90}]}]}).encode())
    put("frames", bytes([3, 2]) + bytes(range(40)))
PY
        ;;
esac
echo "$target: $(ls "$corpus" | wc -l) inputs in the corpus"

case $target in
    index_png | detections | config_toml | prompt) max_len=16384 ;;
    pickle | pkl | pth) max_len=131072 ;;
    *) max_len=65536 ;;
esac
sanitizer=${FUZZ_SANITIZER:-none}
cargo fuzz run --sanitizer "$sanitizer" --debug-assertions "$target" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -max_len="$max_len" \
    -print_final_stats=1 "$@" 2>&1 | tee "/tmp/deva-fuzz-$target.log" | grep -E 'stat::number_of_executed_units|Done|ERROR|panicked|SUMMARY|deadly|crash-|oom-|timeout-' || true
grep -q 'stat::number_of_executed_units' "/tmp/deva-fuzz-$target.log"
