#!/bin/bash
# One GPU session, prepared: the paper-size benchmark rows, then the `gpu` reproduction of one
# task, on a machine whose image has jax with its CUDA plugin but not MuJoCo and has no internet
# (the H200 machines of RESULTS.md). Run from the repository root.
#
#   On a machine with a package registry:
#     bash benchmarks/gpu_session.sh fetch wheels            # ~35 MB of cp312 wheels into wheels/
#   On the GPU machine, with wheels/ copied beside the checkout:
#     bash benchmarks/gpu_session.sh run wheels OUT          # everything goes under OUT/
#
# `run` installs the wheels with --no-deps into a folder of their own and puts it on PYTHONPATH
# (installing the project would pull another jax over the image's), prints the machine, then:
#   1. benchmarks/gpu.py at paper sizes, bfloat16, width padded to 128, fused attention where the
#      card has it (OUT/gpu.json), under a limit of GPU_SECONDS (default 240);
#   2. experiments/reproduce.py at the `gpu` scale for TASK (default wall; PushT ran on
#      2026-11-30, PointMaze and Wall did not) in OUT/reproduce, under REPRODUCE_SECONDS (default
#      300); a stopped run resumes from its finished stages when started again on the same OUT.
# Each step's wall time goes to OUT/session_seconds.txt. A step that fails or runs out of time
# does not stop the next. An empty wheels folder installs nothing (a machine that has the
# packages). SIZES=tiny SCALE=test runs both steps at test sizes, in a minute or two on a CPU.
set -u

fetch() {
  local dir=$1
  python -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dir" \
    mujoco==4.0.0 mujoco-core==4.0.0 mujoco-studio==4.0.0 mujoco-mjx==3.17.0 trimesh glfw \
    pyopengl websockets ml-collections tensorboardX mediapy
}

step() {  # step NAME LIMIT_S COMMAND...: runs COMMAND under LIMIT_S, logs to OUT/NAME.log.
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name $((SECONDS - t0)) s, exit status $rc" | tee -a "$OUT/session_seconds.txt"
  tail -n 25 "$OUT/$name.log"
}

run() {
  local wheels=$1
  OUT=$2
  mkdir -p "$OUT"
  if compgen -G "$wheels/*.whl" > /dev/null; then
    local deps=${DEPS:-/tmp/wmjax_deps}
    python -m pip install -q --no-deps --target "$deps" "$wheels"/*.whl || exit 1
    export PYTHONPATH=.:$deps${PYTHONPATH:+:$PYTHONPATH}
  else
    export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
  fi
  export WMJAX_JAX_CACHE=${WMJAX_JAX_CACHE:-$OUT/jax_cache}
  python -c 'import jax; print(jax.__version__, jax.devices(), jax.config.jax_default_matmul_precision)' \
    | tee "$OUT/machine.txt"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$OUT/machine.txt" 2>/dev/null
  step gpu_benchmark "${GPU_SECONDS:-240}" python benchmarks/gpu.py --sizes "${SIZES:-paper}" \
    --dtype bfloat16 --pad_width_to 128 --json_out "$OUT/gpu.json"
  step reproduce "${REPRODUCE_SECONDS:-300}" python experiments/reproduce.py \
    --config "experiments/configs/reproduce.py:${SCALE:-gpu}" \
    --config.tasks="('${TASK:-wall}',)" --workdir "$OUT/reproduce"
  find "$OUT/reproduce" -name stage_seconds.json -exec cp {} "$OUT/" \; 2>/dev/null
  find "$OUT/reproduce" -maxdepth 1 -name 'results.md' -exec cp {} "$OUT/" \; 2>/dev/null
}

case "${1:-}" in
  fetch) fetch "${2:?usage: gpu_session.sh fetch WHEEL_DIR}" ;;
  run) run "${2:?usage: gpu_session.sh run WHEEL_DIR OUT}" "${3:?usage: gpu_session.sh run WHEEL_DIR OUT}" ;;
  *) echo "usage: bash benchmarks/gpu_session.sh fetch WHEEL_DIR | run WHEEL_DIR OUT" >&2; exit 2 ;;
esac
