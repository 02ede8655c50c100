"""`anemone export serve`: flags -> ServeConfig -> uvicorn (one process) or Ray Serve (--replicas N).

    uv run anemone export serve                                  # embedded model, torch, http://127.0.0.1:8000/v1
    uv run anemone export serve --backend onnx --port 8001       # ONNX Runtime (exports the model once, validated)
    uv run anemone export serve --replicas 2                     # 2 Ray Serve replicas behind one HTTP proxy
    uv run anemone export serve --backend vllm --model out/hf    # GPU, needs anemone-export[vllm]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from anemone_core.config import validate
from anemone_core.launch import free_port  # also imported from here by ray_serve and tests
from anemone_export.server.config import ServeConfig

_FLAGS = {  # flag -> (ServeConfig field, type)
    "--model": ("model", str), "--backend": ("backend", str), "--served-model-name": ("served_model_name", str),
    "--host": ("host", str), "--port": ("port", int), "--api-key": ("api_key", str),
    "--max-batch-size": ("max_batch_size", int), "--batch-wait-ms": ("batch_wait_ms", float),
    "--max-model-len": ("max_model_len", int), "--max-tokens-limit": ("max_tokens_limit", int),
    "--threads": ("threads", int), "--replicas": ("replicas", int),
}


def add_serve_args(p: argparse.ArgumentParser) -> None:
    for flag, (field, typ) in _FLAGS.items():
        info = ServeConfig.model_fields[field]
        p.add_argument(flag, type=typ, default=None, help=f"{info.description} (default {info.default!r})")
    p.add_argument("--json", action="store_true", help="print {'url': ...} as one JSON line when ready")


def config_from_flags(args: argparse.Namespace) -> ServeConfig:
    data = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _) in _FLAGS.items()}
    return validate(ServeConfig, {k: v for k, v in data.items() if v is not None}, source="serve flags")


def _announce(cfg: ServeConfig, port: int, as_json: bool, extra: str = "") -> None:
    url = f"http://{cfg.host}:{port}/v1"
    if as_json:
        print(json.dumps({"url": url, "backend": cfg.backend, "replicas": cfg.replicas}), flush=True)
    else:
        print(f"serving on {url} (backend {cfg.backend}{extra}); Ctrl-C stops", file=sys.stderr, flush=True)


def run_serve(args: argparse.Namespace) -> int:
    cfg = config_from_flags(args)
    if cfg.replicas >= 1:
        from anemone_export.server.ray_serve import serve_with_ray

        return serve_with_ray(cfg, announce=lambda port: _announce(cfg, port, args.json, f", {cfg.replicas} Ray replicas"))
    import uvicorn

    from anemone_export.server.app import create_app
    from anemone_export.server.backends import build_engine

    port = cfg.port or free_port(cfg.host)
    engine = build_engine(cfg)  # load before binding, so a bad model fails before the port opens
    app = create_app(engine, cfg)
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=port, log_level="warning",
                                           timeout_graceful_shutdown=30))
    watcher = threading.Thread(target=lambda: (_wait_started(server), _announce(cfg, port, args.json)), daemon=True)
    watcher.start()
    server.run()  # SIGINT/SIGTERM: stop accepting, finish in-flight requests, then close the engine
    return 0


def _wait_started(server) -> None:
    while not server.started:
        time.sleep(0.05)


class ServerThread:
    """Run the app in a background thread on 127.0.0.1 (tests, benchmarks): `with ServerThread(engine) as url:`."""

    def __init__(self, engine, cfg: ServeConfig | None = None) -> None:
        import uvicorn

        from anemone_export.server.app import create_app

        self.cfg = cfg or ServeConfig()
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(create_app(engine, self.cfg), host="127.0.0.1", port=self.port,
                                                    log_level="warning", timeout_graceful_shutdown=10))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start within 60 s")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
