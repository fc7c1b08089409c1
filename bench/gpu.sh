#!/usr/bin/env bash
# GPU figures in one go (docs/BENCHMARKS.md: flip, hyperbatch and overhead measured on a GPU), at most 8 minutes of
# steps (the sum of their time limits; about 6.5 measured on an H200) after the wheels' install.
#
#   bench/gpu.sh --fetch-wheels DIR     here, online: the wheels a GPU machine with torch but without this project's
#                                       other dependencies needs (Python 3.12, x86-64; bench/gpu-wheels.txt)
#   bench/gpu.sh [--wheels DIR] OUT     on the GPU machine: installs DIR's wheels (no index) into OUT's scratch
#                                       folder, then measures; raw numbers as JSON, the sections, the plot and one
#                                       log under OUT
#   bench/gpu.sh --cpu-smoke OUT        anywhere: the same steps at tiny sizes on the CPU (proves they run; CI)
#   bench/gpu.sh --write OUT            here: append OUT's sections to docs/BENCHMARKS.md and redraw
#                                       hyperbatch_efficiency_plots.png from OUT's numbers
#
# Steps, each under its own time limit so that one step's trouble leaves the others' figures: the tests that need
# a GPU (ꟻLIP on the GPU against the CPU, prompt evolution on a CUDA device against the CPU), ꟻLIP at 512² and 1024² (bench/flip.py), Hyperbatch on an
# SD1.5-shaped UNet at B = 8 and 16 with the sibling diversity, then B = 64 alone, one timed run per sampler
# (bench/hyperbatch.py; --write merges the two), and one pinning run rendered by that UNet and a VAE decoder
# (bench/overhead.py --renderer unet). PYTHON picks the interpreter (default: .venv's, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=gpu wheels=
while [[ "${1:-}" == --* ]]; do
  case $1 in
    --fetch-wheels) mode=fetch ;;
    --cpu-smoke) mode=smoke ;;
    --write) mode=write ;;
    --wheels) wheels=${2:?"--wheels needs a folder of wheels"}; shift ;;
    *) echo "bench/gpu.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
out=${1:?"usage: bench/gpu.sh [--cpu-smoke | --wheels DIR | --write | --fetch-wheels] DIR"}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ] && [ "$mode" != gpu ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if [ "$mode" = fetch ]; then
  platforms=""
  for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    platforms+=" --platform ${tag}_x86_64"
  done
  # shellcheck disable=SC2086
  exec "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    $platforms -d "$out" -r bench/gpu-wheels.txt
fi

if [ "$mode" = write ]; then
  set -e
  "$PYTHON" bench/flip.py --from-json "$out/flip.json" --write
  "$PYTHON" bench/hyperbatch.py --from-json "$out"/hyperbatch*.json --write
  "$PYTHON" bench/overhead.py --from-json "$out/overhead.json" --write
  exit 0
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
log="$out/gpu.log"
: >"$log"
if [ -n "$wheels" ]; then
  site=$(mktemp -d)
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl \
    >>"$log" 2>&1 || { echo "could not install the wheels in $wheels (see $log)" >&2; exit 1; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

failed=0
step() {  # step NAME SECONDS COMMAND...: run under a time limit, output to the log and the screen
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit} s): $*" | tee -a "$log"
  local started=$SECONDS
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - started)) s" | tee -a "$log"
  [ "$rc" -eq 0 ] || failed=1
}

if [ "$mode" = smoke ]; then
  step flip 120 "$PYTHON" bench/flip.py --smoke --json "$out/flip.json"
  step hyperbatch 240 "$PYTHON" bench/hyperbatch.py --smoke --device cpu --json "$out/hyperbatch.json"
  step hyperbatch-64 120 "$PYTHON" bench/hyperbatch.py --smoke --device cpu --speedups-only --batches 2 \
    --json "$out/hyperbatch-b64.json"
  step overhead 240 "$PYTHON" bench/overhead.py --renderer unet --smoke --device cpu --json "$out/overhead.json"
else
  # Limits from the H200 run of 2026-11-30 (docs/gpu/2026-11-30): the test 10 s, ꟻLIP 21 s, Hyperbatch at B = 8
  # and 16 with the diversity at every second fork step 161 s (here every fourth), one timed run per sampler at
  # B = 64 69 s, the overhead step (warm-up, a 2-generation run per recorder, the report rebuilt) about 140 s.
  step machine 10 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; nproc'
  step test-gpu 90 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_flip.py tests/test_tag_evolution.py \
    -k "gpu_matches_cpu or cuda_device"
  step flip 40 "$PYTHON" bench/flip.py --sizes 512 1024 --oracle-pairs 50 --json "$out/flip.json"
  step hyperbatch 160 "$PYTHON" bench/hyperbatch.py --device cuda --batches 8 16 --json "$out/hyperbatch.json"
  step hyperbatch-64 90 "$PYTHON" bench/hyperbatch.py --device cuda --batches 64 --repeats 1 --speedups-only \
    --json "$out/hyperbatch-b64.json"
  step overhead 150 "$PYTHON" bench/overhead.py --renderer unet --device cuda --generations 2 --json "$out/overhead.json"
fi
# Every section measured, in one file to read (the numbers stay in the JSON files), and the plot.
for name in flip hyperbatch overhead; do
  files=("$out/$name.json") extra=()
  [ "$name" = hyperbatch ] && files=("$out"/hyperbatch*.json) extra=(--plot "$out/hyperbatch_efficiency_plots.png")
  if [ -s "${files[0]}" ]; then
    "$PYTHON" "bench/$name.py" --from-json "${files[@]}" "${extra[@]}" >>"$out/sections.md" 2>>"$log" || failed=1
  fi
done
exit "$failed"
