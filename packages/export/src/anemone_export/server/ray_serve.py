"""The same FastAPI app as N Ray Serve replicas behind Ray's HTTP proxy (`anemone export serve --replicas N`).

Each replica builds its own engine (and so its own dynamic batcher) when Ray starts it; Ray's proxy spreads
requests over the replicas. Locally `ray.init()` starts a one-node cluster; on a cluster set RAY_ADDRESS.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

from anemone_core.errors import require
from anemone_export.server.config import ServeConfig

APP_NAME = "anemone-openai"


def build_replica_app(cfg_data: dict):
    """Called inside each replica: the app with an engine built at startup."""
    from anemone_export.server.app import create_app
    from anemone_export.server.backends import build_engine

    cfg = ServeConfig.model_validate(cfg_data)
    return create_app(lambda: build_engine(cfg), cfg)


def init_ray(num_cpus: int | None = None, attempts: int = 3) -> None:
    """Join $RAY_ADDRESS or start a local Ray. Ray 2.60's raylet gives its dashboard agent a hard-coded 15 s to
    start (ray-project/ray#65983), which an overloaded machine misses: a local start is retried."""
    # Under `uv run`, Ray 2.60 starts each worker through `uv run` in a copy of the working directory; our
    # workers share this interpreter. The constant is read at import, so it is patched as well.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray = require("ray", "uv pip install 'ray[serve]'", "serving with Ray Serve replicas")
    import ray._private.ray_constants as ray_constants

    ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] not in ("0", "false")
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], ignore_reinit_error=True)
        return
    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            return
        except Exception as exc:  # Ray raises a bare Exception for a node start-up timeout
            if "timed out during startup" not in str(exc):
                raise
            ray.shutdown()
            if attempt == attempts:
                from anemone_core.errors import AnemoneError

                raise AnemoneError(
                    f"--replicas: a local Ray instance failed to start {attempts} times (its raylet timed out "
                    "waiting for the dashboard agent, which happens on an overloaded machine, ray-project/ray#65983): "
                    "retry when the load is lower, or run `ray start --head` and set RAY_ADDRESS=auto") from None
            time.sleep(2.0 * attempt)


def start_ray_serve(cfg: ServeConfig, port: int, num_cpus: int | None = None, attempts: int = 3) -> None:
    """Start Ray (if needed), Serve's proxy on cfg.host:port and `cfg.replicas` replicas; returns when all are up."""
    init_ray(num_cpus, attempts)
    serve = require("ray.serve", "uv pip install 'ray[serve]'", "serving with Ray Serve replicas")
    serve.start(http_options={"host": cfg.host, "port": port})
    cfg_data = cfg.model_dump()

    def build_app():  # Ray treats only a plain function (inspect.isfunction) as an app builder, not a partial
        return build_replica_app(cfg_data)

    ingress = serve.ingress(build_app)()
    deployment = serve.deployment(ingress, name="openai", num_replicas=cfg.replicas,
                                  ray_actor_options={"num_cpus": 0},  # engines set their own thread counts
                                  max_ongoing_requests=max(64, 4 * cfg.max_batch_size))
    serve.run(deployment.bind(), name=APP_NAME, route_prefix="/", blocking=False)
    _wait_running(serve)


def _wait_running(serve, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(APP_NAME)
        if status is not None and str(status.status).endswith("RUNNING"):
            return
        if status is not None and "DEPLOY_FAILED" in str(status.status):
            from anemone_core.errors import AnemoneError

            raise AnemoneError(f"Ray Serve could not start the replicas: {status.message}")
        time.sleep(0.5)


def stop_ray_serve() -> None:
    import ray

    if ray.is_initialized():  # serve.shutdown() would otherwise start a Ray instance just to stop it
        from ray import serve

        serve.shutdown()
    ray.shutdown()


def serve_with_ray(cfg: ServeConfig, announce: Callable[[int], None] | None = None) -> int:
    """Block serving until SIGINT/SIGTERM, then shut Serve and Ray down."""
    from anemone_export.server.serve_cli import free_port

    port = cfg.port or free_port(cfg.host)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    start_ray_serve(cfg, port)
    try:
        if announce:
            announce(port)
        stop.wait()
    finally:
        stop_ray_serve()
    return 0
