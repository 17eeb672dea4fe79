"""Errors a user can cause, each with a message that says what to do.

Every error raised on purpose by prompt_attr derives from PromptAttrError and
carries the CLI exit code that matches it, so the CLI, the magics and the
Python API report the same sentence instead of a deep traceback.
"""

from __future__ import annotations


class PromptAttrError(Exception):
    """Base class: a problem the user can act on."""

    exit_code = 1


class UsageError(PromptAttrError, ValueError):
    """Bad input or a bad option (CLI exit code 2)."""

    exit_code = 2


class RunBusy(UsageError):
    """The run is being written by another process right now (its lock is held; exit code 2)."""


class BudgetRefused(PromptAttrError):
    """The projected spend exceeds the budget; nothing was called (exit code 3)."""

    exit_code = 3

    def __init__(self, message: str, projected_usd: float, budget_usd: float):
        super().__init__(message)
        self.projected_usd = projected_usd
        self.budget_usd = budget_usd


class BackendError(PromptAttrError):
    """The model backend could not be set up or did not answer.

    `transient` marks failures that may pass by themselves (5xx, 429,
    timeouts, dropped connections, broken answers): they say nothing about
    what the backend supports, so a capability probe must not read them
    as "not supported". `unbilled` marks a request the server refused with
    a status the client does not retry (400, 401, 403, 404, 422): one
    attempt, refused before any work, so nothing was billed. Any other
    failure may have been (a timed-out request may still have been run).
    """

    def __init__(self, message: str = "", *, transient: bool = False, unbilled: bool = False):
        super().__init__(message)
        self.transient = transient
        self.unbilled = unbilled


class BrokenAnswer(BackendError):
    """A 200 whose body is broken (truncated JSON, not JSON, no choices, a vector of a new size).

    The server did the work, so it billed it, and such answers come from
    overloaded servers and proxies, so they are worth asking for again. The
    evaluator does that, booking every attempt in the budget like a new
    call (engine/evaluate.py), then raises `after(attempts)`.
    """

    def __init__(self, problem: str, url: str):
        super().__init__(f"{problem} from {url}", transient=True)
        self.problem, self.url = problem, url

    def after(self, attempts: int) -> BackendError:
        return BackendError(
            f"{self.problem} from {self.url} after {attempts} attempts: check the server (and any proxy "
            "in front of it) and its log, or raise --max-retries",
            transient=True,
        )


class MissingDependency(BackendError):
    """An optional extra (for example `local`) is not installed."""


class RunNotFound(PromptAttrError, LookupError):
    """No run with that id exists in the runs folder."""


class Terminated(KeyboardInterrupt):
    """SIGTERM stopped the run, which was saved as after Ctrl-C (CLI exit code 143, 128 + 15).

    A KeyboardInterrupt, so code that already handles Ctrl-C handles it too.
    """

    exit_code = 143
