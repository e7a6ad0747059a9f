#!/usr/bin/env bash
# bench/accelerator.py once on a lent GPU machine: KERAS_BACKEND=jax (it has JAX and PyTorch, no
# TensorFlow), the Python packages it lacks carried as wheels in .whl/ (git-ignored).
#
#   bench/accelerator_device.sh prepare        # here: download the wheels (cp312, ~10 MB) into .whl/
#   bench/accelerator_device.sh run [ARGS...]  # there: install them to /tmp/site, run with a timeout,
#                                              # results + log into $OUT (default: bench/results)
#
# What the GPU image already holds (and so is not carried): numpy, jax + jax-cuda plugin, scipy,
# scikit-learn (the bundled digits), pillow, h5py, ml-dtypes, absl-py, rich, packaging, pyyaml, tqdm,
# markupsafe, typing-extensions. Versions below are the ones tested on CPU in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(keras==3.15.1 namex==0.1.0 optree==0.20.0 optuna==5.0.0 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0
        sqlalchemy==2.1.9 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        croniter==7.0.0)
PY_VERSION=${PY_VERSION:-3.12}   # the GPU image's python3
# Seconds: the whole run must end inside the device call's timeout_s (at most 600) and leave
# device time (15 minutes a session, the machine's start included) for one rerun.
TIMEOUT_S=${TIMEOUT_S:-330}
BUDGET_S=${BUDGET_S:-150}        # no matrix run starts after this (the goal configurations run first)

case "${1:-}" in
  prepare)
    mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "${WHEELS[@]}"
    du -sh .whl
    ;;
  run)
    shift
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
    out=${OUT:-bench/results}
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv || true
    set +e
    timeout -k 10 "$TIMEOUT_S" python3 -m bench.accelerator --budget-s "$BUDGET_S" --trial-epochs 20 --out "$out" "$@" \
      2>&1 | tee "$out/accelerator.log"
    status=${PIPESTATUS[0]}
    echo "bench.accelerator exit status: $status (124 = timeout; the JSON holds every run finished before it)"
    exit "$status"
    ;;
  *)
    echo "usage: $0 prepare | run [bench.accelerator args]" >&2
    exit 2
    ;;
esac
