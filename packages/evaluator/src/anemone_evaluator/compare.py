"""`anemone eval compare A B`: did B regress against A? Paired tests over the documents both runs scored.

0/1 metrics (acc, exact_match): exact McNemar test on the discordant pairs. Other metrics: paired bootstrap
of the per-document differences. B regressed on a metric when it is worse in the metric's direction and
p < alpha. Runs whose task fingerprints differ are compared only with a warning (different questions).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from anemone_core.errors import AnemoneError
from anemone_evaluator.stats import mcnemar_exact, paired_bootstrap


def load_run(folder: str | Path) -> tuple[dict[str, Any], dict[tuple[str, int], dict[str, float]]]:
    f = Path(folder).expanduser()
    res, smp = f / "results.json", f / "samples.jsonl"
    if not res.is_file() or not smp.is_file():
        raise AnemoneError(f"'{f}' is not an evaluation results folder (needs results.json and samples.jsonl): "
                           "give a folder written by `anemone eval run`")
    results = json.loads(res.read_text(encoding="utf-8"))
    scores = {}
    for line in smp.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            scores[(rec["task"], int(rec["doc_id"]))] = rec.get("scores", {})
    return results, scores


def compare_runs(a: str | Path, b: str | Path, alpha: float = 0.05) -> dict[str, Any]:
    res_a, sc_a = load_run(a)
    res_b, sc_b = load_run(b)
    rows, warnings = [], []
    for task, info_b in res_b["tasks"].items():
        info_a = res_a["tasks"].get(task)
        if info_a is None:
            continue
        if info_a.get("fingerprint") != info_b.get("fingerprint"):
            warnings.append(f"task '{task}': fingerprints differ (different data or prompt config)")
        if info_a.get("chat_template") != info_b.get("chat_template"):
            warnings.append(f"task '{task}': chat_template differs between runs")
        docs = sorted(k for k in sc_b if k[0] == task and k in sc_a)
        for metric, mb in info_b["metrics"].items():
            pairs = [(sc_a[k].get(metric), sc_b[k].get(metric)) for k in docs]
            pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
            if not pairs:
                continue
            xa, xb = np.array([p[0] for p in pairs], float), np.array([p[1] for p in pairs], float)
            higher = mb.get("higher_is_better", True)
            binary = set(np.unique(np.concatenate([xa, xb]))) <= {0.0, 1.0}
            if binary:
                p, n10, n01 = mcnemar_exact(xa, xb)
                test, detail = "mcnemar", {"a_only": n10, "b_only": n01}
            else:
                _, p, _ = paired_bootstrap(xa, xb)
                test, detail = "paired_bootstrap", {}
            delta = float(xb.mean() - xa.mean())
            worse = delta < 0 if higher else delta > 0
            rows.append({"task": task, "metric": metric, "a": info_a["metrics"].get(metric, {}).get("value"),
                         "b": mb["value"], "delta_paired": delta, "n_paired": len(pairs), "test": test,
                         "p_value": p, "regressed": bool(worse and p < alpha),
                         "improved": bool(not worse and delta != 0 and p < alpha), **detail})
    if not rows:
        raise AnemoneError(f"runs '{a}' and '{b}' share no task with per-sample scores: compare runs of the same tasks")
    return {"a": str(a), "b": str(b), "alpha": alpha, "rows": rows, "warnings": warnings,
            "regressed": any(r["regressed"] for r in rows)}
