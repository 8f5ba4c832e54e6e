"""Load test: our Litestar service vs MLflow's scoring server, same registered model, same clients.

    python -m benchmarks.serve_load [--model checkpoints/baseline] [--duration 20] [--connections 16] [--scenarios]

What it does, in one run:

1. registers the checkpoint (default: the baseline's workdir; trained first if missing) as
   ``mlp-jax-bench@champion`` in a temporary SQLite MLflow store;
2. starts ``python -m mlp_jax.serve --model models:/mlp-jax-bench@champion`` and
   ``mlflow models serve -m models:/mlp-jax-bench@champion --env-manager local``, both on
   127.0.0.1 with the same number of workers;
3. drives each with ``wrk`` (``--connections`` keep-alive connections for ``--duration``
   seconds after a short warm-up) with one-row and 256-row requests: ours on ``/predict``
   and ``/invocations``, MLflow's on ``/invocations`` (the same ``dataframe_split`` body);
4. prints requests/s, rows/s, p50/p99 latency and errors for each, and the ratios;
5. with ``--scenarios``, also one-row ``/predict`` on ours with 64 connections, and with 512
   connections against ``--max-queue-rows 8`` (its non-2xx answers are the expected 503s).

``wrk`` is the load generator (install: ``apt-get install -y wrk``). Without it the script
says so and falls back to a Python client in ``--connections`` threads, which on a small
machine is itself the bottleneck: its figures are lower bounds, not comparable to wrk's.
Client and servers share the machine's cores; say so when quoting figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "mlp-jax-bench"


@dataclass
class Result:
    server: str
    endpoint: str
    rows_per_request: int
    requests_per_s: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    client: str


# ----------------------------------------------------------------------------- setup


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_checkpoint(model: Path) -> None:
    if model.exists():
        return
    print(f"{model} not found: training the baseline first (tracking off)", flush=True)
    subprocess.run(
        [sys.executable, "-m", "experiments.baseline", "tracking.enabled=false", "train.progress=false"],
        cwd=ROOT,
        check=True,
    )


def register(checkpoint: Path, store: Path) -> str:
    """Logs ``checkpoint`` as an MLflow model in ``store`` and makes it ``MODEL_NAME@champion``."""
    import mlflow
    from mlflow import MlflowClient

    from mlp_jax import pyfunc
    from mlp_jax.artifact import resolve

    workdir, step = resolve(checkpoint)
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    mlflow.set_experiment("serve-benchmark")
    with mlflow.start_run():
        info = pyfunc.log_model(workdir / str(step), registered_model_name=MODEL_NAME)
    MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", info.registered_model_version)
    return f"models:/{MODEL_NAME}@champion"


def start(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    out = open(log, "w")  # the child keeps it; closed when the process ends
    return subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}) before {url} answered:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ----------------------------------------------------------------------------- load


def wrk_script(body: str, path: Path) -> Path:
    lua = f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = {json.dumps(body)}\n'
    path.write_text(lua)
    return path


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}[unit]


def run_wrk(
    url: str, script: Path, connections: int, duration: float, threads: int
) -> tuple[float, float, float, int, int]:
    """``(requests/s, p50 ms, p99 ms, requests, errors)`` from one wrk run."""
    seconds = max(1, round(duration))
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # anchored: "69.50%" appears above
        p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
        total = int(re.search(r"(\d+) requests in", out).group(1))
    except AttributeError:
        raise SystemExit(f"cannot read wrk's output:\n{out}") from None
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return rps, p50, p99, total, errors


def run_python_client(url: str, body: str, connections: int, duration: float) -> tuple[float, float, float, int, int]:
    """Fallback without wrk: ``connections`` threads, each one keep-alive connection."""
    host, port, path = re.fullmatch(r"http://([^:/]+):(\d+)(/.*)", url).groups()
    payload = body.encode()
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        mine = []
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            try:
                conn.request("POST", path, payload, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
            mine.append(time.perf_counter() - t)
            if not ok:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    start_t = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start_t
    lat = np.asarray(latencies) * 1e3
    return len(lat) / elapsed, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), len(lat), errors[0]


# ----------------------------------------------------------------------------- micro-batching scenarios


def concurrency_scenarios(
    uri: str, env: dict[str, str], tmp: Path, body: str, args: argparse.Namespace, use_wrk: bool
) -> list[Result]:
    """One-row ``/predict`` on our server: 64 connections, then 512 against a tiny queue.

    The second is an overload test: its "errors" are the 503s (with ``Retry-After``) the
    full queue answers; what matters is that nothing else fails, the server stays up and
    ``/health`` still answers afterwards (checked here, printed).
    """
    import urllib.request

    out = []
    for label, connections, flags in (("c64", 64, []), ("c512 queue 8", 512, ["--max-queue-rows", "8"])):
        port = free_port()
        log = tmp / f"scenario-{connections}.log"
        cmd = [sys.executable, "-m", "mlp_jax.serve", "--model", uri, "--port", str(port), *flags]
        proc = start(cmd, env, tmp, log)
        try:
            wait_ready(f"http://127.0.0.1:{port}/ready", proc, log)
            url = f"http://127.0.0.1:{port}/predict"
            if use_wrk:
                script = wrk_script(body, tmp / "load.lua")
                run_wrk(url, script, connections, args.warmup, args.threads)
                rps, p50, p99, total, errors = run_wrk(url, script, connections, args.duration, args.threads)
            else:
                rps, p50, p99, total, errors = run_python_client(url, body, connections, args.duration)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                health = r.status
            alive = proc.poll() is None
        finally:
            stop(proc)
        client = "wrk" if use_wrk else "python"
        out.append(Result(f"mlp-jax {label}", "/predict", 1, rps, rps, p50, p99, total, errors, client))
        print(
            f"mlp-jax {label:13s} /predict    1 row(s): {rps:9,.0f} req/s  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
            f"non-2xx {errors}/{total}  /health after: {health}, server up: {alive}",
            flush=True,
        )
    return out


# ----------------------------------------------------------------------------- the serving targets (issues #11, #15)

STATUS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body) statuses[status] = (statuses[status] or 0) + 1 end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do io.write(string.format("status %d %d\\n", k, v)) end
  end
end
"""


def wrk_full(
    url: str, body: str, connections: int, duration: float, threads: int, script: Path, statuses: bool = False
):
    """One wrk run: ``(req/s, p50 ms, p99 ms, requests, non-2xx, socket errors, {status: count})``."""
    lua = f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = {json.dumps(body)}\n'
    script.write_text(lua + (STATUS_LUA if statuses else ""))
    threads = min(threads, connections)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    sock = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        sock = sum(int(g) for g in m.groups())
    counts: dict[int, int] = {}
    for code, k in re.findall(r"^status (\d+) (\d+)$", out, re.M):
        counts[int(code)] = counts.get(int(code), 0) + int(k)
    return rps, p50, p99, total, non2xx, sock, counts


class HealthWatch:
    """Polls ``/health`` every 50 ms in a thread: how many polls, failures, and the slowest answer."""

    def __init__(self, url: str):
        self.url, self.polls, self.failures, self.slowest_ms = url, 0, 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import urllib.request

        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    ok = r.status == 200
            except OSError:
                ok = False
            self.polls += 1
            self.failures += not ok
            self.slowest_ms = max(self.slowest_ms, (time.perf_counter() - t) * 1e3)
            self._stop.wait(0.05)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def train_penguins(workdir: Path) -> None:
    """A small model with text columns and gaps (palmerpenguins), as the named-record model."""
    import palmerpenguins

    csv = Path(palmerpenguins.__file__).parent / "data" / "penguins.csv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.baseline",
            "tracking.enabled=false",
            "train.compare_sklearn=false",
            "train.progress=false",
            "train.epochs=15",
            "train.batch_size=32",
            f"data.path={csv}",
            "data.target=species",
            f"workdir={workdir}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


def penguin_record(predictor) -> dict:
    """The first complete row of the penguins table, as JSON types, keyed by the model's columns."""
    import palmerpenguins
    import pandas as pd

    frame = pd.read_csv(Path(palmerpenguins.__file__).parent / "data" / "penguins.csv").dropna()
    row = frame.iloc[0]
    return {c: (row[c].item() if hasattr(row[c], "item") else row[c]) for c in predictor.feature_names}


def serving_targets(args: argparse.Namespace) -> int:
    """Issues #11 and #15 in one run: every server up at once, contenders interleaved, medians."""
    from mlp_jax.predictor import Predictor

    if shutil.which("wrk") is None:
        raise SystemExit("--targets needs wrk (apt-get install -y wrk)")
    model = Path(args.model).resolve()
    ensure_checkpoint(model)
    sk_data = Path(args.sklearn_data or ROOT / "data" / "classification_data.csv").resolve()
    tmp = Path(tempfile.mkdtemp(prefix="mlp-jax-serve-targets-"))
    named = Path(args.named_model).resolve() if args.named_model else tmp / "penguins"
    if not named.exists():
        print(f"training the named-record model (palmerpenguins) in {named}", flush=True)
        train_penguins(named)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    numeric, penguins = Predictor.load(model), Predictor.load(named)
    rng = np.random.default_rng(0)
    specs = numeric.preprocessor.columns
    row = np.round([s.center + (s.scale or 1.0) * rng.normal() for s in specs], 6).tolist()
    list_body = json.dumps({"features": row})
    named_body = json.dumps({"features": penguin_record(penguins)})
    serve = [sys.executable, "-m", "mlp_jax.serve"]
    target_col = args.sklearn_target
    servers = {
        "batched": [*serve, "--model", str(model)],
        "unbatched": [*serve, "--model", str(model), "--no-batching"],
        "named": [*serve, "--model", str(named)],
        "queue8": [*serve, "--model", str(model), "--max-queue-rows", "8"],
        "fastapi": [sys.executable, "-m", "benchmarks.fastapi_sklearn", "--data", str(sk_data), "--target", target_col],
    }
    ports = {k: free_port() for k in servers}
    procs = {}
    try:
        for k, cmd in servers.items():
            procs[k] = start([*cmd, "--port", str(ports[k])], env, tmp, tmp / f"{k}.log")
        for k, proc in procs.items():
            wait_ready(f"http://127.0.0.1:{ports[k]}/health", proc, tmp / f"{k}.log")
        url = {k: f"http://127.0.0.1:{p}/predict" for k, p in ports.items()}
        cases = [  # (case, server, body, connections)
            ("c16 fastapi+sklearn", "fastapi", list_body, 16),
            ("c16 ours", "batched", list_body, 16),
            ("c16 ours unbatched", "unbatched", list_body, 16),
            ("c16 ours named (penguins)", "named", named_body, 16),
            ("c64 ours", "batched", list_body, 64),
            ("c64 ours unbatched", "unbatched", list_body, 64),
            ("c1 ours", "batched", list_body, 1),
            ("c1 ours unbatched", "unbatched", list_body, 1),
        ]
        for _case, server, body, c in cases:  # warm every server and path once
            wrk_full(url[server], body, c, args.warmup, args.threads, tmp / "w.lua")
        runs: dict[str, list[tuple]] = {case: [] for case, *_ in cases}
        overload: list[dict] = []
        for r in range(args.repeats):
            for case, server, body, c in cases:
                res = wrk_full(url[server], body, c, args.duration, args.threads, tmp / "w.lua")
                runs[case].append(res)
                print(
                    f"round {r + 1} {case:28s} {res[0]:9,.0f} req/s  p50 {res[1]:6.2f} ms  p99 {res[2]:6.2f} ms  "
                    f"non-2xx {res[4]} socket errors {res[5]}",
                    flush=True,
                )
            with HealthWatch(f"http://127.0.0.1:{ports['queue8']}/health") as watch:
                res = wrk_full(url["queue8"], list_body, 512, args.duration, args.threads, tmp / "s.lua", statuses=True)
            alive = procs["queue8"].poll() is None
            o = {
                "req_s": res[0],
                "p50_ms": res[1],
                "p99_ms": res[2],
                "requests": res[3],
                "statuses": res[6],
                "socket_errors": res[5],
                "health_polls": watch.polls,
                "health_failures": watch.failures,
                "health_slowest_ms": round(watch.slowest_ms, 1),
                "server_up": alive,
            }
            overload.append(o)
            print(f"round {r + 1} c512 queue 8: {o}", flush=True)
        load = os.getloadavg()
    finally:
        for proc in procs.values():
            stop(proc)
    med = {case: tuple(float(np.median([x[i] for x in v])) for i in range(3)) for case, v in runs.items()}
    errors = {case: sum(x[4] + x[5] for x in v) for case, v in runs.items()}
    print(f"\nmedians over {args.repeats} rounds of {args.duration:.0f} s (load average at the end {load[0]:.1f}):")
    print("| case | requests/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|")
    for case in runs:
        rps, p50, p99 = med[case]
        total = sum(x[3] for x in runs[case])
        print(f"| {case} | {rps:,.0f} | {p50:.2f} | {p99:.2f} | {errors[case]} / {total:,} |")
    ratio = lambda a, b: float(np.median([x[0] / y[0] for x, y in zip(runs[a], runs[b], strict=True)]))  # noqa: E731
    p50r = float(np.median([x[1] / y[1] for x, y in zip(runs["c1 ours"], runs["c1 ours unbatched"], strict=True)]))
    print("\ntargets (ratios: median of the per-round ratios):")
    print(
        f"- #15 c16 ours / FastAPI+sklearn: {ratio('c16 ours', 'c16 fastapi+sklearn'):.2f}x (>= 3), "
        f"p99 {med['c16 ours'][2]:.2f} ms (<= 10), errors {errors['c16 ours']}"
    )
    print(
        f"- #15 c64 batched / unbatched: {ratio('c64 ours', 'c64 ours unbatched'):.2f}x (>= 1.5), "
        f"p99 {med['c64 ours'][2]:.2f} ms (<= 20)"
    )
    print(f"- #15 c1 p50 batched / unbatched: {p50r:.3f} (<= 1.10)")
    bad = sum(sum(v for k, v in o["statuses"].items() if k not in (200, 503)) + o["socket_errors"] for o in overload)
    print(
        f"- #15 c512 queue 8: answers other than 200/503 and socket errors: {bad}; /health failures "
        f"{sum(o['health_failures'] for o in overload)} of {sum(o['health_polls'] for o in overload)} polls; "
        f"server up: {all(o['server_up'] for o in overload)}"
    )
    print(
        f"- #11 c16 named (penguins) / list (numeric): {ratio('c16 ours named (penguins)', 'c16 ours'):.2f} (>= 0.75), "
        f"p99 {med['c16 ours named (penguins)'][2]:.2f} ms (<= 10)"
    )
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "overload": overload, "load": load}, indent=1, default=str))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="checkpoints/baseline", help="checkpoint (workdir or step folder) to register")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each measurement")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--workers", type=int, default=1, help="server workers, the same for both servers")
    p.add_argument("--batch-rows", type=int, default=256)
    p.add_argument("--skip-mlflow", action="store_true", help="only our service")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument(
        "--scenarios",
        action="store_true",
        help="also: one-row /predict with 64 connections, and with 512 connections against --max-queue-rows 8",
    )
    p.add_argument(
        "--targets",
        action="store_true",
        help="the serving targets instead (issues #11, #15): ours (batched, --no-batching, a penguins model, a "
        "queue of 8) and FastAPI + scikit-learn, interleaved over --repeats rounds; no MLflow",
    )
    p.add_argument("--repeats", type=int, default=3, help="--targets: rounds")
    p.add_argument("--named-model", help="--targets: a model with text columns (default: train one on palmerpenguins)")
    p.add_argument(
        "--sklearn-data", help="--targets: CSV the FastAPI + sklearn server fits on (default: the baseline's)"
    )
    p.add_argument("--sklearn-target", default="target", help="--targets: its label column")
    args = p.parse_args(argv)
    if args.targets:
        return serving_targets(args)

    use_wrk = shutil.which("wrk") is not None
    if not use_wrk:
        print(
            "wrk not found (install it: apt-get install -y wrk). Falling back to a Python client in threads: "
            "it is the bottleneck on a small machine, so these figures are lower bounds, not wrk figures.",
            file=sys.stderr,
        )
    model = Path(args.model).resolve()
    json_out = args.json.resolve() if args.json else None
    ensure_checkpoint(model)

    tmp = Path(tempfile.mkdtemp(prefix="mlp-jax-serve-bench-"))
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONPATH": str(ROOT),
        # mlflow models serve execs `uvicorn` by name: the venv's bin must be on PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY")})
    os.chdir(tmp)  # MLflow's artifacts (./mlruns) land in the temporary folder
    uri = register(model, tmp)
    print(f"registered {model} as {uri} in {env['MLFLOW_TRACKING_URI']}", flush=True)

    from mlp_jax.predictor import Predictor

    predictor = Predictor.load(model)
    names = list(predictor.feature_names)
    rng = np.random.default_rng(0)
    if predictor.preprocessor is None:  # format 1 checkpoints
        mean = np.asarray(predictor.meta.preprocessing["mean"])
        scale = np.asarray(predictor.meta.preprocessing["scale"])
    else:  # all-numeric inputs: each column's centre and scale as fitted
        specs = predictor.preprocessor.columns
        mean = np.asarray([s.center for s in specs])
        scale = np.asarray([s.scale or 1.0 for s in specs])

    def rows(n: int) -> list[list[float]]:
        return np.round(mean + scale * rng.normal(size=(n, len(names))), 6).tolist()

    one, batch = rows(1), rows(args.batch_rows)
    bodies = {
        ("/predict", 1): json.dumps({"features": one[0]}),
        ("/predict", args.batch_rows): json.dumps({"instances": batch}),
        ("/predict named", 1): json.dumps({"features": dict(zip(names, one[0], strict=True))}),
        ("/invocations", 1): json.dumps({"dataframe_split": {"columns": names, "data": one}}),
        ("/invocations", args.batch_rows): json.dumps({"dataframe_split": {"columns": names, "data": batch}}),
    }

    servers: dict[str, tuple[list[str], list[str]]] = {
        "mlp-jax (litestar)": (
            [sys.executable, "-m", "mlp_jax.serve", "--model", uri, "--workers", str(args.workers)],
            ["/predict", "/invocations"],
        ),
    }
    if not args.skip_mlflow:
        mlflow_cli = str(Path(sys.executable).with_name("mlflow"))
        servers["mlflow models serve"] = (
            [mlflow_cli, "models", "serve", "-m", uri, "--env-manager", "local", "-w", str(args.workers)],
            ["/invocations"],
        )

    results: list[Result] = []
    for name, (cmd, endpoints) in servers.items():
        port = free_port()
        log = tmp / f"{name.split()[0]}.log"
        proc = start([*cmd, "--port", str(port), "--host", "127.0.0.1"], env, tmp, log)
        try:
            health = "/ready" if name.startswith("mlp-jax") else "/ping"
            wait_ready(f"http://127.0.0.1:{port}{health}", proc, log)
            for endpoint, n in bodies:  # "/predict named": one named record, against the list form
                if endpoint.split()[0] in endpoints:
                    url = f"http://127.0.0.1:{port}{endpoint.split()[0]}"
                    body = bodies[(endpoint, n)]
                    if use_wrk:
                        script = wrk_script(body, tmp / "load.lua")
                        run_wrk(url, script, args.connections, args.warmup, args.threads)
                        rps, p50, p99, total, errors = run_wrk(
                            url, script, args.connections, args.duration, args.threads
                        )
                    else:
                        run_python_client(url, body, args.connections, args.warmup)
                        rps, p50, p99, total, errors = run_python_client(url, body, args.connections, args.duration)
                    r = Result(name, endpoint, n, rps, rps * n, p50, p99, total, errors, "wrk" if use_wrk else "python")
                    results.append(r)
                    print(
                        f"{name:20s} {endpoint:13s} {n:4d} row(s): {rps:9,.0f} req/s {rps * n:11,.0f} rows/s  "
                        f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  errors {errors}/{total}",
                        flush=True,
                    )
        finally:
            stop(proc)

    if args.scenarios:
        results += concurrency_scenarios(uri, env, tmp, bodies[("/predict", 1)], args, use_wrk)

    def find(server: str, endpoint: str, n: int) -> Result | None:
        return next((r for r in results if (r.server, r.endpoint, r.rows_per_request) == (server, endpoint, n)), None)

    print()
    for n in (1, args.batch_rows):
        theirs = find("mlflow models serve", "/invocations", n)
        for endpoint in ("/predict", "/invocations"):
            ours = find("mlp-jax (litestar)", endpoint, n)
            if ours and theirs:
                print(
                    f"{n:4d} row(s): ours {endpoint} / mlflow /invocations = {ours.requests_per_s / theirs.requests_per_s:5.1f}x "
                    f"req/s; p99 {ours.p99_ms:.2f} ms vs {theirs.p99_ms:.2f} ms"
                )
    if json_out:
        json_out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
