"""Prometheus text exposition (format 0.0.4) of the server's counters, gauges and histograms, without a client lib."""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class _Histogram:
    def __init__(self, buckets) -> None:
        self.buckets, self.counts, self.sum, self.count = tuple(buckets), [0] * len(buckets), 0.0, 0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
        self.sum += v
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{b}"}} {c}' for b, c in zip(self.buckets, self.counts, strict=True)]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        lab = f"{{{labels}}}" if labels else ""
        return out + [f"{name}_sum{lab} {self.sum}", f"{name}_count{lab} {self.count}"]


class ServerMetrics:
    """Thread-safe: the engine thread records batches, the event loop records requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, _Histogram] = {}
        self.batch = _Histogram(BATCH_BUCKETS)
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.in_flight = 0

    def request_done(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(route, status)] += 1
            self.latency.setdefault(route, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def batch_run(self, size: int, prompt_tokens: int) -> None:
        with self._lock:
            self.batch.observe(size)
            self.prompt_tokens += prompt_tokens

    def tokens(self, n: int) -> None:
        with self._lock:
            self.generated_tokens += n

    def render(self, queue_depth: int = 0) -> str:
        with self._lock:
            lines = ["# HELP anemone_requests_total HTTP requests by route and status code",
                     "# TYPE anemone_requests_total counter"]
            lines += [f'anemone_requests_total{{route="{r}",code="{c}"}} {n}' for (r, c), n in sorted(self.requests.items())]
            lines += ["# HELP anemone_request_seconds request latency", "# TYPE anemone_request_seconds histogram"]
            for route, h in sorted(self.latency.items()):
                lines += h.lines("anemone_request_seconds", f'route="{route}"')
            lines += ["# HELP anemone_batch_size requests per engine batch", "# TYPE anemone_batch_size histogram"]
            lines += self.batch.lines("anemone_batch_size")
            lines += ["# HELP anemone_prompt_tokens_total prompt tokens processed", "# TYPE anemone_prompt_tokens_total counter",
                      f"anemone_prompt_tokens_total {self.prompt_tokens}",
                      "# HELP anemone_generated_tokens_total tokens generated", "# TYPE anemone_generated_tokens_total counter",
                      f"anemone_generated_tokens_total {self.generated_tokens}",
                      "# HELP anemone_requests_in_flight requests being answered", "# TYPE anemone_requests_in_flight gauge",
                      f"anemone_requests_in_flight {self.in_flight}",
                      "# HELP anemone_queue_depth requests waiting for the engine", "# TYPE anemone_queue_depth gauge",
                      f"anemone_queue_depth {queue_depth}"]
        return "\n".join(lines) + "\n"
