"""Endpoint fuzz: call every named endpoint of a running app with bad values, one parameter at a time.

The endpoints and their parameters come from the app's own API description (``gradio_client``'s
``view_api``), so an endpoint added later is fuzzed without touching this file. Each parameter gets
bad values chosen by its type (wrong types, empty, unknown names, path traversal, huge and negative
numbers, ...) while every other parameter keeps its default.

Each call ends in one of:

- ``accepted``: the endpoint returned normally and no output carries a warning;
- ``warned``: it returned normally with a ``⚠ ...`` status output (the app's ``guarded`` handlers);
- ``specific``: the client got an error whose message is the app's (``gr.Error``, or Gradio's own
  checks such as "value is not in the list of choices");
- ``generic``: the client got only "... has raised an exception". ``origin`` tells where the
  exception was raised: ``gradio-input`` (Gradio's preprocessing of the value, before any app code
  runs) or ``app`` (the app's own handler, or Gradio failing on what the handler returned).

``origin`` needs the server's exceptions: ``record_server_errors()`` wraps Gradio's error reporting in
this process, so the fuzz must run against an app launched in the same process (as the tests and
``bench/endpoint_fuzz.py`` do).
"""
from __future__ import annotations

import contextlib
import re
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

GENERIC = "has raised an exception"
# Gradio phases: an exception under preprocess_data came from turning the client's value into the
# handler's argument; anything else was raised by (or returned from) the app's handler.
_PREPROCESS_FRAMES = ("preprocess_data", "preprocess")


@dataclass(frozen=True)
class Param:
    """One parameter of one endpoint, as the API description gives it."""

    endpoint: str
    index: int
    name: str
    python_type: str
    component: str
    default: Any


@dataclass(frozen=True)
class BadValue:
    """A value to send and a short label for reports (``repr`` of a 5000-character string is unreadable)."""

    label: str
    value: Any


@dataclass
class Outcome:
    param: Param
    bad: BadValue
    kind: str  # accepted | warned | specific | generic
    message: str = ""
    origin: str = ""  # for generic: gradio-input | app
    seconds: float = 0.0


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, kind: str, origin: str | None = None) -> int:
        return sum(o.kind == kind and (origin is None or o.origin == origin) for o in self.outcomes)

    def generic_from_app(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == "generic" and o.origin != "gradio-input"]

    def summary(self) -> str:
        total = len(self.outcomes)
        endpoints = len({o.param.endpoint for o in self.outcomes})
        params = len({(o.param.endpoint, o.param.name) for o in self.outcomes})
        return (f"{total} calls over {params} parameters of {endpoints} endpoints: "
                f"{self.count('specific')} specific error, {self.count('warned')} warning status, "
                f"{self.count('accepted')} accepted, {self.count('generic')} generic "
                f"({len(self.generic_from_app())} from the app's code, "
                f"{self.count('generic', 'gradio-input')} from Gradio's input preprocessing)")


# ---- the API description -------------------------------------------------------------------------------

def endpoint_params(api: dict[str, Any]) -> dict[str, list[Param]]:
    """``view_api(return_format="dict")`` -> endpoint name -> its parameters (named endpoints only)."""
    out: dict[str, list[Param]] = {}
    for name, spec in api["named_endpoints"].items():
        params = []
        for i, p in enumerate(spec["parameters"]):
            default = p.get("parameter_default") if p.get("parameter_has_default") else p.get("example_input")
            params.append(Param(name, i, p.get("parameter_name") or f"param_{i}", p["python_type"]["type"],
                                p.get("component") or "", default))
        out[name] = params
    return out


_STRINGS = [BadValue("None", None), BadValue("''", ""), BadValue("37", 37), BadValue("3.5", 3.5),
            BadValue("True", True), BadValue("'nope-37'", "nope-37"), BadValue("traversal", "../../../../etc/passwd"),
            BadValue("5000 chars", "x" * 5000), BadValue("['a']", ["a"]), BadValue("{'a': 1}", {"a": 1}),
            BadValue("NUL", "bad\x00name"), BadValue("unicode", "ü💥\u202e")]
_NUMBERS = [BadValue("None", None), BadValue("''", ""), BadValue("'abc'", "abc"), BadValue("-1", -1),
            BadValue("0", 0), BadValue("2**70", 2 ** 70), BadValue("-2**70", -(2 ** 70)), BadValue("1.5", 1.5),
            BadValue("1e300", 1e300), BadValue("[1]", [1]), BadValue("True", True), BadValue("'5e-4'", "5e-4")]
_BOOLS = [BadValue("None", None), BadValue("'yes'", "yes"), BadValue("2", 2), BadValue("[]", [])]
_LISTS = [BadValue("None", None), BadValue("'a'", "a"), BadValue("[37]", [37]), BadValue("['nope-37']", ["nope-37"]),
          BadValue("[None]", [None]), BadValue("100 x 'x'", ["x"] * 100), BadValue("{'a': 1}", {"a": 1})]


def bad_values(param: Param) -> list[BadValue]:
    """The bad values for ``param``, by its Python type."""
    kind = param.python_type
    if kind.startswith("list"):
        return list(_LISTS)
    if kind in ("float", "int"):
        return list(_NUMBERS)
    if kind == "bool":
        return list(_BOOLS)
    return list(_STRINGS)


def sample(values: list[BadValue], limit: int | None, seed: str) -> list[BadValue]:
    """At most ``limit`` of ``values``: always the first three (None, empty, wrong type), then a spread picked
    deterministically by ``seed`` (so CI runs the same calls every time, and different parameters get different
    picks)."""
    if limit is None or len(values) <= limit:
        return values
    head, rest = values[:3], values[3:]
    start = sum(map(ord, seed)) % len(rest)
    rotated = rest[start:] + rest[:start]
    return head + rotated[: max(0, limit - 3)]


# ---- classifying what came back -------------------------------------------------------------------------

_SERVER_ERRORS: list[BaseException] = []


@contextlib.contextmanager
def record_server_errors() -> Iterator[list[BaseException]]:
    """Collect every exception Gradio turns into an error message, in this process, while active."""
    import gradio.queueing as queueing

    original = queueing.error_payload

    def recording(error: BaseException | None, show_error: bool) -> dict[str, Any]:
        if error is not None:
            _SERVER_ERRORS.append(error)
        return original(error, show_error)

    queueing.error_payload = recording
    try:
        yield _SERVER_ERRORS
    finally:
        queueing.error_payload = original


def origin_of(error: BaseException) -> str:
    """``gradio-input`` if raised while Gradio preprocessed the inputs, else ``app``."""
    names = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    return "gradio-input" if any(n in _PREPROCESS_FRAMES for n in names) and not _in_app(error) else "app"


def _in_app(error: BaseException) -> bool:
    files = [frame.filename for frame in traceback.extract_tb(error.__traceback__)]
    return any(re.search(r"[/\\](pss|pss_app)[/\\]", f) for f in files)


def _warned(result: Any) -> str:
    """The first ``⚠`` string among the outputs (nested in update dicts too), or ''."""
    stack = [result]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and "⚠" in item:
            return item
        if isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
    return ""


def call(client: Any, param: Param, params: list[Param], bad: BadValue,
         overrides: dict[str, Any] | None = None) -> Outcome:
    """Call ``param.endpoint`` with ``bad`` for ``param`` and the defaults (or ``overrides``) elsewhere."""
    from gradio_client.exceptions import AppError

    args = [(overrides or {}).get(p.name, p.default) for p in params]
    args[param.index] = bad.value
    before = len(_SERVER_ERRORS)
    start = time.perf_counter()
    try:
        result = client.predict(*args, api_name=param.endpoint)
    except AppError as exc:
        seconds = time.perf_counter() - start
        message = str(exc.message if hasattr(exc, "message") else exc)
        if GENERIC in message:
            server = _SERVER_ERRORS[before:]
            origin = origin_of(server[-1]) if server else "app"
            detail = f"{type(server[-1]).__name__}: {server[-1]}" if server else message
            return Outcome(param, bad, "generic", detail[:300], origin, seconds)
        return Outcome(param, bad, "specific", message[:300], seconds=seconds)
    warned = _warned(result)
    return Outcome(param, bad, "warned" if warned else "accepted", warned[:300],
                   seconds=time.perf_counter() - start)


def fuzz(client: Any, limit: int | None = None, skip: Callable[[Param], bool] | None = None,
         overrides: dict[str, dict[str, Any]] | None = None,
         after_each: Callable[[Outcome], None] | None = None) -> Report:
    """Fuzz every named endpoint of ``client``'s app (``limit`` bad values per parameter; None = all).

    ``overrides``: endpoint -> parameter name -> the value used while *another* parameter is fuzzed (e.g. a
    cheap preset for ``/launch_run``). ``after_each`` sees each outcome as it happens (progress, cleanup).
    """
    report = Report()
    api = client.view_api(return_format="dict", print_info=False)
    with record_server_errors():
        for endpoint, params in endpoint_params(api).items():
            for param in params:
                if skip is not None and skip(param):
                    continue
                for bad in sample(bad_values(param), limit, f"{endpoint}:{param.name}"):
                    outcome = call(client, param, params, bad, (overrides or {}).get(endpoint))
                    report.outcomes.append(outcome)
                    if after_each is not None:
                        after_each(outcome)
    return report

