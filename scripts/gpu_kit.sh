#!/usr/bin/env bash
# Prepare what scripts/gpu_run.sh needs on a bare, offline GPU machine whose python3
# (3.12 here) already has torch, torchvision, pandas, seaborn, scipy, matplotlib, pyyaml:
#
#   scripts/gpu_kit.sh DATASET_FILE...     e.g.  scripts/gpu_kit.sh cifar10-jpeg.tar.gz MNIST
#   STAGE="FashionMNIST" scripts/gpu_kit.sh cifar10-jpeg.tar.gz MNIST
#
# 1. .whl/: wheels of the notebook stack the machine lacks (papermill, ipykernel and
#    their pure-Python needs; myst-nb and docutils without dependencies, enough for
#    `glue`), for CPython 3.12 on manylinux x86-64. Packages the machine already has
#    are removed again, so its own versions are used.
# 2. .devcarry/data/: copies of the named entries of the data mirror
#    ($PARAMSTRESS_DATA_MIRROR, default ../shared/data).
# 3. .devstage/data/: copies of the entries named in $STAGE, for a first, short call that only
#    stages them into the device checkout's data/ (carry [".devstage"], command
#    `bash scripts/gpu_run.sh COMMIT 0`); the machine keeps data/ while warm (30 s after a call),
#    so the second call (carry [".whl", ".devcarry"]) must follow at once.
# The folders are added to .git/info/exclude. The whole tree that travels in one call must
# stay under 64 MiB: about 9 MB of repository + 15 MB of wheels + data (cifar10-jpeg 19 MB,
# MNIST 11 MB, FashionMNIST 30 MB: not all three at once, hence $STAGE).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PYVER=${PYVER:-3.12}
mirror=${PARAMSTRESS_DATA_MIRROR:-../shared/data}

mkdir -p .git/info
for d in /.whl/ /.devcarry/ /.devstage/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done

rm -rf .whl && mkdir .whl
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64"
common="--only-binary=:all: --python-version $PYVER --implementation cp $platforms -d .whl"
"$PY" -m pip download -q $common papermill==2.7.0 ipykernel==7.4.0 nbclient==0.11.0 nbformat==5.11.1 \
  jupyter_client==8.10.0 ipython==9.18.1
"$PY" -m pip download -q $common --no-deps myst-nb==1.4.0 docutils==0.21.2
# already in the GPU image (see the device notes): keep the machine's own
(cd .whl && rm -f attrs-* certifi-* charset_normalizer-* click-* idna-* packaging-* psutil-* pygments-* \
  pyyaml-* python_dateutil-* requests-* tqdm-* typing_extensions-* urllib3-* tzdata-*)

rm -rf .devcarry && mkdir -p .devcarry/data
for item in "$@"; do
  [ -e "$mirror/$item" ] || { echo "no $item in $mirror" >&2; exit 2; }
  cp -r "$mirror/$item" .devcarry/data/
done
rm -rf .devstage
if [ -n "${STAGE:-}" ]; then
  mkdir -p .devstage/data
  for item in $STAGE; do
    [ -e "$mirror/$item" ] || { echo "no $item in $mirror" >&2; exit 2; }
    cp -r "$mirror/$item" .devstage/data/
  done
  du -sh .devstage
  echo "first call: carry [\".devstage\"], command: bash scripts/gpu_run.sh \$(git rev-parse --short=12 HEAD) 0"
fi
du -sh .whl .devcarry
echo "carry: [\".whl\", \".devcarry\"]; then: OUT=\$OUT bash scripts/gpu_run.sh \$(git rev-parse --short=12 HEAD) 540 NOTEBOOK..."
