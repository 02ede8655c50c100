"""The one exception type users see: a message naming the value, the rule and the fix."""

from __future__ import annotations


class AnemoneError(Exception):
    """A problem with the user's input or environment. The command prints the message, no traceback.

    Raise it with a message that names the field or flag, the bad value, the rule it broke and the fix.
    """


class ConfigError(AnemoneError):
    """One or more invalid config fields; the message lists every problem at once."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        head = f"invalid config{f' ({source})' if source else ''}: {len(problems)} problem(s)"
        super().__init__(head + "\n" + "\n".join(f"  - {p}" for p in problems))


class MissingExtraError(AnemoneError):
    """An optional dependency is not installed; the message names the install command."""

    def __init__(self, module: str, install: str, purpose: str) -> None:
        super().__init__(f"{purpose} needs the Python module '{module}', which is not installed: run `{install}`")


def require(module: str, install: str, purpose: str):
    """Import an optional heavy dependency where it is used, failing with the command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, install, purpose) from exc
