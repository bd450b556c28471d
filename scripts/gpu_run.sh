#!/usr/bin/env bash
# Execute book notebooks at the `gpu` profile on a bare, offline GPU machine (this
# workplace's device tool; any CUDA box with python3 + torch works the same way).
#
#   scripts/gpu_run.sh COMMIT SECONDS NOTEBOOK [NOTEBOOK ...]
#   scripts/gpu_run.sh COMMIT 0                 stage .devstage/data and .devcarry/data into data/, stop
#   BENCH="benchmarks/workers.py --device cuda" scripts/gpu_run.sh COMMIT SECONDS NOTEBOOK...
#                                               run a benchmark first, within the same SECONDS
#                                               (several: BENCH="a.py --x; b.py --y"; with no
#                                               NOTEBOOK, only the benchmarks run)
#
# What travels with the working tree (scripts/gpu_kit.sh prepares it on the sending machine):
#   .whl/                    pure-Python wheels the machine lacks (papermill, ipykernel,
#                            myst-nb and docutils --no-deps, ...; see the issue notes)
#   .devcarry/data/          the offline data mirror's files the notebooks need; copied into the
#                            checkout's data/ (the data root, ignored by git), where a warm machine
#                            keeps them between calls. Data sets that do not fit one call's 64 MiB
#                            beside the rest are staged by an earlier call with no NOTEBOOK
#                            from .devstage/data (e.g. FashionMNIST first, then cifar10-jpeg.tar.gz
#                            + MNIST + .whl), the two calls less than the machine's warm period
#                            (30 s) apart; see scripts/gpu_kit.sh.
# COMMIT is the commit the tree was copied from: the copy may carry no .git or a stale one
# (seen: an older commit "+ uncommitted changes"), so provenance shows COMMIT as "copied tree".
# The device tool hands a machine back 30 s after a call ends, with data/ and checkpoints/: prepare
# the next call before this one returns (2026-11-27: a 91.66 % ResNet-34, 353 s of training, was lost
# to a cold start between the call that trained it and the one meant to finish its sweep).
# SECONDS bounds all notebooks together: a notebook still running then is interrupted and its
# partial copy kept; the first failure ends the run. Everything comes back under $OUT (default
# runs/gpu-device): the executed notebooks, their CSVs, and log.txt.
set -u
commit=$1; budget=$2; shift 2
out=${OUT:-runs/gpu-device}
mkdir -p "$out"
start=$(date +%s)
exec > >(tee -a "$out/log.txt") 2>&1

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 3; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# the package is lib/paramstress (pip install -e . where pip can reach an index)
export PYTHONPATH=$PWD/lib${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export PARAMSTRESS_GIT_COMMIT=$commit PARAMSTRESS_OFFLINE=1
for carried in .devstage/data .devcarry/data; do
  if [ -d "$carried" ]; then
    mkdir -p data && cp -rn "$carried"/. data/ && echo "staged into data/: $(ls "$carried" | tr '\n' ' ')"
  fi
done
echo "in data/: $(ls data | grep -v README | tr '\n' ' ')"
[ "$#" -eq 0 ] && [ -z "${BENCH:-}" ] && exit 0  # staging only; BENCH with no NOTEBOOK runs just the benchmarks
# checkpoints/ (the default) is ignored by git, so a warm machine keeps it between calls: a second
# call resumes training from its per-epoch checkpoints and the sweeps from their cached rows

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, papermill, ipykernel, paramstress; from myst_nb.ext.glue import glue; \
print('torch', torch.__version__, '| cuda', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" \
  || { echo "imports failed"; exit 4; }

status=0
# e.g. BENCH="benchmarks/workers.py --device cuda --quick": timed first, same budget; several
# benchmarks separated by ';' run one after another
IFS=';' read -ra benches <<< "${BENCH:-}"
for bench in "${benches[@]}"; do
  [ -z "${bench// /}" ] && continue
  left=$(( budget - ($(date +%s) - start) ))
  if [ "$left" -lt 30 ]; then echo "skipping benchmark $bench: ${left} s left"; continue; fi
  echo "== python3 $bench, at most ${left} s"
  timeout -s INT -k 20 "$left" python3 $bench || echo "== benchmark rc=$?"
  echo "== benchmark done after $(( $(date +%s) - start )) s"
done
for nb in "$@"; do
  left=$(( budget - ($(date +%s) - start) ))
  if [ "$left" -lt 30 ]; then echo "skipping $nb: ${left} s left"; status=5; continue; fi
  echo "== $nb at gpu, at most ${left} s"
  timeout -s INT -k 20 "$left" python3 -m paramstress.runner "$nb" --profile gpu --out "$out" || status=$?
  echo "== $nb rc=$status after $(( $(date +%s) - start )) s"
  if [ "$status" -ne 0 ]; then  # keep the partial notebook; later notebooks would likely fail alike
    cp runs/failed/"$nb".gpu.ipynb "$out/$nb.failed.ipynb" 2>/dev/null
    break
  fi
done
exit $status
