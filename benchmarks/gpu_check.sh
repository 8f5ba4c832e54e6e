#!/usr/bin/env bash
# One bounded accelerator check: the one-program sweep against one member and 16 sequential runs
# (issue #14's GPU target), the same sweep at 64 and 256 members, the training benchmark (a
# GPU-sized run) and the baseline experiment, with every result and log written under $OUT (8 files).
#
#   OUT=/path/to/out bash benchmarks/gpu_check.sh
#   GPU_CHECK_QUICK=1 OUT=/tmp/gpuout bash benchmarks/gpu_check.sh   # tiny settings: proves it runs (a CPU will do)
#
# Runs from a checkout of the repository without installing it (PYTHONPATH=.). Needs jax (with
# CUDA on a GPU machine), flax, optax, orbax-checkpoint, pandas, scikit-learn, matplotlib; not
# mlflow or litestar (the benchmark skips its tracked run when mlflow is missing).
#
# Files: env.txt (device, versions), sweep_speed.log + .json (a list: one result per member count),
# train_throughput.log + .json, baseline.log, baseline_summary.json (the run's folder itself is
# removed: checkpoints are many files), gpu_check.log (steps, exit codes, wall times).
set -uo pipefail
: "${OUT:?set OUT to the folder for results}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export MLFLOW_DISABLE_TELEMETRY=true
# The benchmark starts baseline runs in subprocesses while it holds the GPU itself: no 75% preallocation.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# The runner's persistent compilation cache, kept out of $HOME and out of $OUT.
export MLP_JAX_COMPILATION_CACHE="${MLP_JAX_COMPILATION_CACHE:-${TMPDIR:-/tmp}/mlp-jax-gpu-check-cache}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
LOG="$OUT/gpu_check.log"
: >"$LOG"

if [[ -n "${GPU_CHECK_QUICK:-}" ]]; then
    BENCH_ARGS=(--quick --budget-s 20)
    BENCH_TIMEOUT=300
    BASELINE_ARGS=(train.epochs=2)
    SWEEP_EPOCHS=1
    SWEEP_MORE=(4)
else
    BENCH_ARGS=(--rounds 1 --budget-s 60 --e2e-runs cold,warm)
    BENCH_TIMEOUT=200
    BASELINE_ARGS=()
    SWEEP_EPOCHS=10
    SWEEP_MORE=(64 256)
fi

step() {  # step NAME TIMEOUT_S LOGFILE CMD...: run one bounded step, record its exit code and wall time
    local name=$1 limit=$2 log=$3
    shift 3
    local t0=$SECONDS
    echo "[$(date -u +%H:%M:%S)] $name: $*" >>"$LOG"
    timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
    local rc=$?
    echo "[$(date -u +%H:%M:%S)] $name: exit $rc after $((SECONDS - t0)) s" >>"$LOG"
    return 0
}

{
    echo "date: $(date -u)"
    echo "host: $(uname -a)"
    nvidia-smi 2>&1 || echo "(no nvidia-smi)"
    "$PY" - <<'EOF' 2>&1
import importlib.metadata as md, platform, jax
print("python", platform.python_version())
for p in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "pandas", "pyarrow", "scikit-learn",
          "matplotlib", "tqdm", "mlflow", "litestar"):
    try:
        print(p, md.version(p))
    except md.PackageNotFoundError:
        print(p, "missing")
print("backend", jax.default_backend(), "devices", jax.devices())
EOF
} >"$OUT/env.txt" 2>&1

# Issue #14 on a GPU: 16 members in one program vs one member (target <= 1.5x) and vs 16
# sequential runner runs; then larger sweeps without the sequential runs.
: >"$OUT/sweep_speed.log"
sweep() {  # sweep K [--no-sequential]: one sweep_speed run, its log appended, its JSON kept
    local k=$1
    shift
    step "sweep$k" 240 "$OUT/sweep.tmp" \
        "$PY" -m benchmarks.sweep_speed --epochs "$SWEEP_EPOCHS" --members "$k" --out "$OUT/sweep$k.json.tmp" "$@"
    cat "$OUT/sweep.tmp" >>"$OUT/sweep_speed.log"
}
sweep 16
for k in "${SWEEP_MORE[@]}"; do
    sweep "$k" --no-sequential
done
"$PY" - "$OUT" <<'EOF' >>"$LOG" 2>&1
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
runs = [json.loads(p.read_text()) for p in sorted(out.glob("sweep*.json.tmp"), key=lambda p: len(p.name))]
(out / "sweep_speed.json").write_text(json.dumps(runs, indent=2))
for r in runs:
    print(f"sweep {r['members']} members on {r['device']}: {r['sweep_over_one']:.2f}x one member "
          f"(train only {r['sweep_over_one_train_only']:.2f}x); sequential/sweep {r.get('sequential_over_sweep', 'n/a')}")
EOF
rm -f "$OUT"/sweep.tmp "$OUT"/sweep*.json.tmp

step benchmark "$BENCH_TIMEOUT" "$OUT/train_throughput.log" \
    "$PY" -m benchmarks.train_throughput "${BENCH_ARGS[@]}" --json "$OUT/train_throughput.json"

step baseline 240 "$OUT/baseline.log" \
    "$PY" -m experiments.baseline tracking.enabled=false train.compare_sklearn=false train.progress=false \
    "workdir=$OUT/run" "${BASELINE_ARGS[@]}"
if [[ -f "$OUT/run/summary.json" ]]; then
    cp "$OUT/run/summary.json" "$OUT/baseline_summary.json"
fi
rm -rf "$OUT/run"
echo "files: $(cd "$OUT" && ls | tr '\n' ' ')" >>"$LOG"
cat "$LOG"
