"""Server throughput under 16 concurrent clients on the embedded SmolLM2-135M-Instruct (CPU, fp32): continuous
batching on vs off on the torch engine, and the same app as 2 Ray Serve replicas; tokens/s, p50/p99 latency.

    uv run python benchmarks/export_server.py [--clients 16] [--seconds 30] [--max-tokens 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def load(url: str, clients: int, seconds: float, max_tokens: int) -> dict[str, float]:
    stop_at = time.monotonic() + seconds
    lat: list[float] = []
    tokens, errors = [0], [0]
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(timeout=600) as c:
            n = 0
            while time.monotonic() < stop_at:
                t = time.perf_counter()
                r = c.post(f"{url}/v1/completions", json={"prompt": f"Story {i}.{n}: Once upon a time", "max_tokens":
                                                          max_tokens, "temperature": 0.8, "seed": i * 1000 + n})
                dt = time.perf_counter() - t
                n += 1
                with lock:
                    if r.status_code == 200:
                        lat.append(dt)
                        tokens[0] += r.json()["usage"]["completion_tokens"]
                    else:
                        errors[0] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    lat.sort()
    return {"requests": len(lat), "errors": errors[0], "tokens_s": tokens[0] / wall, "p50": statistics.median(lat),
            "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))], "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from anemone_export.server.backends import build_engine
    from anemone_export.server.config import ServeConfig
    from anemone_export.server.serve_cli import ServerThread, free_port

    results = {}
    for label, batch in (("torch, batching off", 1), ("torch, continuous batching", args.clients)):
        cfg = ServeConfig(max_batch_size=batch, threads=args.threads)
        engine = build_engine(cfg)
        with ServerThread(engine, cfg) as url:
            load(url, 2, 3, 4)  # warm-up
            results[label] = load(url, args.clients, args.seconds, args.max_tokens)
    if not args.no_ray:
        from anemone_export.server.ray_serve import start_ray_serve, stop_ray_serve

        cfg = ServeConfig(max_batch_size=args.clients, threads=args.threads, replicas=2)
        port = free_port()
        try:
            start_ray_serve(cfg, port)
            url = f"http://127.0.0.1:{port}"
            load(url, 2, 3, 4)
            results["Ray Serve, 2 replicas, batching"] = load(url, args.clients, args.seconds, args.max_tokens)
        except Exception as exc:  # report, keep the other rows
            print(f"Ray Serve run failed: {type(exc).__name__}: {str(exc)[:200]}")
        finally:
            stop_ray_serve()
    base = results["torch, batching off"]["tokens_s"]
    print(f"server throughput, SmolLM2-135M fp32 CPU, {args.clients} concurrent clients, max_tokens={args.max_tokens}, "
          f"{args.seconds:.0f} s per run, {args.threads} torch thread(s) per engine")
    print(f"{'configuration':34s} {'requests':>8s} {'errors':>6s} {'tokens/s':>9s} {'p50 s':>7s} {'p99 s':>7s} {'vs off':>7s}")
    for name, r in results.items():
        print(f"{name:34s} {r['requests']:8d} {r['errors']:6d} {r['tokens_s']:9.1f} {r['p50']:7.2f} {r['p99']:7.2f} "
              f"{r['tokens_s'] / base:6.2f}x")


if __name__ == "__main__":
    main()
