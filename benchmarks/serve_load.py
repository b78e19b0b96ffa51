"""``jemc-infer serve`` under load on loopback, over a 100k-video index, against ``query`` processes.

The bundle and index of ``query_cold_start.py`` (paper sizes: rows of 2,048 floats, random unit
rows, a random text encoder exported to ONNX). The service runs as a user starts it (``jemc-infer
serve`` in its own process); clients are threads with one keep-alive HTTP connection each, sending
``POST /search`` (one text, k = 10, texts drawn from a fixed list) for ``--seconds`` or
``--requests`` per level, whichever ends first, at concurrency 1, 8 and 32. Peers in the same run:
the work the service must do per request, in one process without HTTP (encode the text with the
ONNX engine + exact search: the floor), and the same query through a ``jemc-infer query`` process
each (what there was before the service). Goal: p50 at concurrency 1 within 1.2x of the floor,
no errors at 32.

    .venv/bin/python benchmarks/serve_load.py [--rows 100000] [--seconds 20] [--requests 400]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from query_cold_start import BIN, build  # noqa: E402 - the same bundle and index

TEXTS = ["a man is cooking in a kitchen", "a man is cooking", "a kitchen", "a man in a kitchen", "cooking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def floor(index: Path, bundle: Path, repeats: int) -> dict[str, float]:
    """Encode + search in this process (no HTTP, no new process): what a request cannot avoid."""
    from jemc_infer.bundle import read_bundle
    from jemc_infer.engines import open_engine
    from jemc_infer.index.search import search
    from jemc_infer.index.store import Index
    from jemc_infer.query import encode_queries, parse_space_weights

    b = read_bundle(bundle)
    engine, _ = open_engine(b.path, "text", backend="onnxruntime", device="cpu")
    weights = parse_space_weights(None, b)
    enc, srch = [], []
    with engine, Index.open(index) as ix:
        for i in range(repeats):
            t = time.perf_counter()
            q, _ = encode_queries(b, engine, [TEXTS[i % len(TEXTS)]], weights)
            t1 = time.perf_counter()
            search(ix, q, 10)
            t2 = time.perf_counter()
            enc.append(t1 - t)
            srch.append(t2 - t1)
    total = [a + b for a, b in zip(enc, srch, strict=True)]
    return {"encode_p50_ms": statistics.median(enc) * 1e3, "search_p50_ms": statistics.median(srch) * 1e3,
            "floor_p50_ms": statistics.median(total) * 1e3}


def load(port: int, concurrency: int, seconds: float, requests: int) -> dict[str, float]:
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds
    sent = [0]

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = c
        while time.perf_counter() < stop:
            with lock:
                if sent[0] >= requests:
                    break
                sent[0] += 1
            body = json.dumps({"text": TEXTS[i % len(TEXTS)], "k": 10})
            i += 1
            t = time.perf_counter()
            try:
                conn.request("POST", "/search", body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                ok = r.status == 200 and len(json.loads(data)["results"][0]["hits"]) == 10
            except Exception as exc:  # a dropped connection is an error to report, not a crash
                ok, data = False, str(exc).encode()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            dt = time.perf_counter() - t
            with lock:
                (lat if ok else errors).append(dt if ok else data[:200])  # type: ignore[arg-type]

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1e3
    return {"concurrency": concurrency, "requests": len(lat), "errors": len(errors), "qps": len(lat) / wall,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan"), "first_error": str(errors[0]) if errors else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--query-runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t = time.perf_counter()
        bundle, index = build(tmp, args.rows, "float32")
        print(f"bundle + {args.rows:,}-row index built in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        base = floor(index, bundle, 30)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "JEMC_MODEL"}
        server = subprocess.Popen([str(BIN / "jemc-infer"), "serve", "--index", str(index), "--model", str(bundle), "--port", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            deadline = time.perf_counter() + 60
            while True:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    conn.request("GET", "/healthz")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if time.perf_counter() > deadline or server.poll() is not None:
                    sys.exit(f"serve did not start: {server.stderr.read().decode() if server.stderr else ''}")
                time.sleep(0.2)
            load(port, 1, 3.0, 20)  # warm: first shard reads, engine, thread pool
            levels = [load(port, c, args.seconds, args.requests) for c in (1, 8, 32)]
        finally:
            server.terminate()
            server.wait(timeout=30)
        query = [str(BIN / "jemc-infer"), "query", TEXTS[0], "--index", str(index), "--model", str(bundle), "-k", "10"]
        runs = []
        for _ in range(args.query_runs):
            t = time.perf_counter()
            subprocess.run(query, capture_output=True, check=True, env=env)
            runs.append(time.perf_counter() - t)
    res = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}", "rows": args.rows,
           "dim": 2048, **{k: round(v, 2) for k, v in base.items()},
           "levels": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in lv.items()} for lv in levels],
           "query_process_p50_ms": round(statistics.median(runs) * 1e3, 1),
           "p50_c1_over_floor": round(levels[0]["p50_ms"] / base["floor_p50_ms"], 2), "goal": "p50 at concurrency 1 <= 1.2x the floor; no errors at 32"}
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
