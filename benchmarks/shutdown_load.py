"""SIGTERM under load: what clients get while the service shuts down.

    python -m benchmarks.shutdown_load --model checkpoints/baseline [--clients 16] [--rows 300] \
        [--new-connections] [--repeats 3] [--http graceful|httptools]

Starts ``python -m mlp_jax.serve`` on 127.0.0.1, has ``--clients`` threads post
``--rows``-row ``/predict`` bodies as fast as they can (keep-alive connections, or a new
connection per request with ``--new-connections``), sends SIGTERM after ``--load-s``
seconds, and counts every outcome until the server has exited: HTTP statuses, refused
connections (the listener is closed: the expected end), resets and connections closed
without an answer (what a graceful shutdown should not produce). Prints one line per
repeat and the server's exit code and shutdown time.

``--http httptools`` serves with uvicorn's own protocol instead of
``mlp_jax.http_protocol.GracefulHttpToolsProtocol``, for the comparison.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.serve_load import free_port

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = {"graceful": None, "httptools": "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol"}

# serve's main with another uvicorn protocol (only for the comparison)
_SERVE_WITH = """
import sys
import uvicorn
from mlp_jax import serve
run, protocol = uvicorn.run, sys.argv.pop(1)
uvicorn.run = lambda app, **kw: run(app, **{**kw, "http": protocol})
raise SystemExit(serve.main(sys.argv[1:]))
"""


def one_run(args: argparse.Namespace) -> str:
    port = free_port()
    serve_args = ["--model", str(args.model), "--port", str(port)]
    protocol = PROTOCOLS[args.http]
    cmd = (
        [sys.executable, "-c", _SERVE_WITH, protocol, *serve_args]
        if protocol
        else [sys.executable, "-m", "mlp_jax.serve", *serve_args]
    )
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/ready")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start:\n{server.stdout.read()[-2000:] if server.stdout else ''}")
        time.sleep(0.2)
    body = json.dumps({"instances": [[0.1 * j for j in range(args.features)] for _ in range(args.rows)]})
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        conn = None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                what = str(r.status)
                if args.new_connections or r.getheader("connection") == "close":
                    conn.close()
                    conn = None
            except ConnectionRefusedError:
                what, conn = "refused", None
                time.sleep(0.01)
            except ConnectionResetError:
                what, conn = "reset", None
            except http.client.RemoteDisconnected:
                what, conn = "closed without an answer", None
            except BrokenPipeError:
                what, conn = "broken pipe", None
            except OSError as e:
                what, conn = type(e).__name__, None
            with lock:
                outcomes[what] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for t in threads:
        t.start()
    time.sleep(args.load_s)
    server.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    code = server.wait(120)
    took = time.monotonic() - t0
    time.sleep(0.3)  # what the clients see once it is gone
    stop.set()
    for t in threads:
        t.join(60)
    bad = sum(v for k, v in outcomes.items() if k not in ("200", "refused"))
    return f"exit {code} after {took:.2f} s; outcomes {dict(outcomes)}; not 200/refused: {bad}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=ROOT / "checkpoints" / "baseline")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rows", type=int, default=300)
    p.add_argument("--features", type=int, default=20, help="numbers per row (the model's inputs)")
    p.add_argument("--new-connections", action="store_true", help="a new connection per request")
    p.add_argument("--load-s", type=float, default=2.0, help="seconds of load before SIGTERM")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--http", choices=tuple(PROTOCOLS), default="graceful")
    args = p.parse_args()
    mode = "a new connection per request" if args.new_connections else "keep-alive"
    print(f"{args.clients} clients, {args.rows}-row bodies, {mode}, protocol {args.http}", flush=True)
    for i in range(args.repeats):
        print(f"run {i + 1}: {one_run(args)}", flush=True)


if __name__ == "__main__":
    main()
