"""Guards of the architecture: core imports no sibling; each package imports only what its pyproject declares."""

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.split(r"[\s\[<>=!~;(@]", req.strip(), maxsplit=1)[0])


def declared(pkg: str) -> set[str]:
    project = tomllib.loads((ROOT / "packages" / pkg / "pyproject.toml").read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {_requirement_name(r) for r in reqs} | {_norm(project["name"])}


def imported_modules(pkg: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "packages" / pkg / "src").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], []).append(str(path.relative_to(ROOT)))
    return found


def test_there_are_eight_members():
    assert PACKAGES == ["automodel", "bridge", "core", "curator", "evaluator", "export", "rl", "speech"]


def test_core_imports_no_sibling():
    siblings = {f"anemone_{p}" for p in PACKAGES if p != "core"}
    bad = {m: where for m, where in imported_modules("core").items() if m in siblings}
    assert not bad, f"anemone-core must not import sibling packages: {bad}"


def test_core_stays_light():
    heavy = {"megatron", "vllm", "transformer_engine", "ray", "lightning", "pytorch_lightning"}
    bad = {m: where for m, where in imported_modules("core").items() if m in heavy}
    assert not bad, f"anemone-core must not import GPU/cluster stacks: {bad}"


@pytest.mark.parametrize("pkg", PACKAGES)
def test_imports_are_declared(pkg):
    dist_of = md.packages_distributions()
    allowed = declared(pkg)
    problems = []
    for module, where in sorted(imported_modules(pkg).items()):
        if module in sys.stdlib_module_names or module == "__future__":
            continue
        dists = {_norm(d) for d in dist_of.get(module, [])}
        if module.startswith("anemone_") or not dists:
            dists = {_norm(module)}  # siblings, and optional GPU extras that are not installed here (vllm, ...)
        if not dists & allowed:
            problems.append(f"{module} (from {sorted(dists) or 'no installed distribution'}) in {where[0]}")
    assert not problems, f"anemone-{pkg} imports modules its pyproject does not declare: " + "; ".join(problems)
