#!/usr/bin/env bash
# One-GPU check of bnnopt, under 8 minutes on one CUDA GPU (an H100/H200 class card).
#
#   bash bench/gpu_check.sh            # from the repository root; writes $OUT (default bench/results/gpu)
#
# 1. the CUDA-marked tests (pytest -m cuda), plus the mamba_ssm kernel test when installed
# 2. one epoch of each method family on cifar10-subset on the GPU (ste, irnet, laq, blaq,
#    fcgrad, lstmfc, fsg): seconds per epoch and test accuracy
# 3. FSG with the paper's sizes (flat layout, Mamba expand 100, d_state 16: preset=paper)
#    against STE in seconds per epoch, on ResNet-20 and ResNet-56 (FSG paper Table 5:
#    4.65x for ResNet-56 on CIFAR-100)
# 4. bf16 vs fp32 (ste and fsg, 3 epochs): seconds per epoch and accuracy
#
# Uses the python that has torch (python3 by default; PYTHON=... to choose) with
# PYTHONPATH=src, so nothing is installed. The data: the shared CIFAR-10 subset
# ($BNNOPT_SHARED, else ../shared or ./shared); without it steps 2-4 use sklearn's digits.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
for d in "${BNNOPT_SHARED:-}" ../shared ./shared; do
  if [ -n "$d" ] && [ -d "$d/data/cifar-10-batches-py" ]; then export BNNOPT_SHARED="$(cd "$d" && pwd)"; break; fi
done
LOG="$OUT/gpu_check.log"
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }
start=$(date +%s)

say "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$LOG"
$PY - <<'EOF' 2>&1 | tee -a "$LOG"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported())
try:
    import mamba_ssm  # noqa: F401
    print("mamba_ssm: installed (its kernel is used)")
except ImportError:
    print("mamba_ssm: not installed (the pure-PyTorch scan is used)")
EOF
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || { say "no CUDA: stop"; exit 1; }

say "== 1. CUDA-marked tests"
timeout 150 $PY -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tail -n 15 | tee -a "$LOG"

if [ -n "${BNNOPT_SHARED:-}" ]; then
  DATA=(--protocol cifar10-subset); R20=(--model resnet20); R56=(--model resnet56 --set init=null)
  say "data: cifar10-subset from $BNNOPT_SHARED"
else
  DATA=(--dataset digits --model resnet20 --set augment=false); R20=(); R56=(--model resnet56)
  say "data: shared CIFAR-10 subset not found; digits instead (timings then say little)"
fi

train() {  # name, then bnnopt train flags; prints the summary line
  local name=$1; shift
  rm -rf "$OUT/runs/$name"
  if timeout 120 $PY -m bnnopt train "${DATA[@]}" --device cuda --no-progress --out "$OUT/runs/$name" "$@" \
      > "$OUT/runs-$name.txt" 2>&1; then
    $PY - "$OUT/runs/$name" "$name" <<'EOF' | tee -a "$LOG"
import json, sys
from pathlib import Path
rows = [json.loads(l) for l in (Path(sys.argv[1]) / "metrics.jsonl").read_text().splitlines()]
s = [r["seconds"] for r in rows]
steady = s[1:] if len(s) > 1 else s
print(f"{sys.argv[2]:<28} epochs {len(rows)}  s/epoch first {s[0]:7.2f}  later {sum(steady)/len(steady):7.2f}"
      f"  test acc {rows[-1]['test_acc']:6.2f}%  loss {rows[-1]['loss']:.4f}")
EOF
  else
    say "$name FAILED (exit $?): $(tail -n 3 "$OUT/runs-$name.txt" | tr '\n' ' ')"
  fi
}
mkdir -p "$OUT/runs"

say "== 2. one epoch of each family on the GPU (first epoch includes CUDA warm-up)"
for m in ste irnet laq blaq fcgrad lstmfc fsg; do
  train "family-$m" "${R20[@]}" --method "$m" --epochs 2
done

say "== 3. FSG at the paper's sizes vs STE, seconds per epoch"
train "t5-r20-ste" "${R20[@]}" --method ste --epochs 2
train "t5-r20-fsg-paper" "${R20[@]}" --method fsg --set method_options.preset=paper --epochs 2
train "t5-r56-ste" "${R56[@]}" --method ste --epochs 2
train "t5-r56-fsg-paper" "${R56[@]}" --method fsg --set method_options.preset=paper --epochs 2
$PY - "$OUT/runs" <<'EOF' | tee -a "$LOG"
import json, sys
from pathlib import Path
root = Path(sys.argv[1])
def later(name):
    f = root / name / "metrics.jsonl"
    if not f.exists():
        return None
    s = [json.loads(l)["seconds"] for l in f.read_text().splitlines()]
    return s[-1]
for depth in ("r20", "r56"):
    a, b = later(f"t5-{depth}-ste"), later(f"t5-{depth}-fsg-paper")
    if a and b:
        print(f"FSG (paper sizes) / STE on {depth}: {b:.2f} s / {a:.2f} s = {b / a:.2f}x "
              "(FSG paper Table 5, ResNet-56 CIFAR-100: 4.65x)")
EOF

say "== 4. bf16 vs fp32 (3 epochs)"
for m in ste fsg; do
  for p in fp32 bf16; do train "prec-$m-$p" "${R20[@]}" --method "$m" --precision "$p" --epochs 3; done
done
train "prec-ste-bf16-channels-last" "${R20[@]}" --method ste --precision bf16 --channels-last --epochs 3

say "== done in $(( $(date +%s) - start )) s; log: $LOG"
