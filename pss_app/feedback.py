"""Turning engine errors into messages in the UI, so one bad file or vanished folder never breaks the app."""
from __future__ import annotations

import functools
import inspect
import logging
import types
import typing
from collections.abc import Callable
from typing import Any

import gradio as gr

from pss.errors import PssError, explain_os_error

log = logging.getLogger(__name__)

# What a handler may fail with because of the data: engine errors, and OS errors from files that vanish
# between a check and a read. Anything else is a bug and goes to Gradio's own error toast and the log.
DATA_ERRORS = (PssError, OSError)


def problem(message: str) -> str:
    """Show ``message`` as a warning toast and return it as status text (``⚠ ...``)."""
    gr.Warning(message)
    return f"⚠ {message}"


class InputError(PssError, ValueError):
    """A value sent to a handler has the wrong type (an API client, or a custom dropdown value)."""


_KINDS: dict[type, tuple[tuple[type, ...], str]] = {
    str: ((str,), "text (a name or id)"),
    float: ((int, float), "a number"),
    int: ((int,), "a whole number"),
    bool: ((bool,), "true or false"),
}


def _expected(annotation: Any) -> tuple[tuple[type, ...], str, bool] | None:
    """(accepted types, description, is a list of them) for the annotations handlers use, else None."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is list and typing.get_args(annotation):
        inner = _KINDS.get(typing.get_args(annotation)[0])
        return None if inner is None else (inner[0], f"a list of {inner[1]}", True)
    kind = _KINDS.get(annotation)
    return None if kind is None else (kind[0], kind[1], False)


def _input_checks(fn: Callable[..., Any]) -> list[tuple[str, tuple[tuple[type, ...], str, bool] | None]]:
    """(parameter name, expected kind) of each positional parameter of ``fn`` (None: not checked)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that does not resolve: check nothing rather than fail at import
        hints = {}
    return [(name, _expected(hints.get(name))) for name, param in inspect.signature(fn).parameters.items()
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)]


def check_inputs(checks: list[tuple[str, tuple[tuple[type, ...], str, bool] | None]], args: tuple) -> None:
    """``InputError`` naming the first argument whose type does not match its annotation. ``None`` passes (an
    empty field), and so does anything the annotation does not describe (Gradio's own values)."""
    # not strict: a call may pass fewer positional args than there are parameters (defaults, keyword args)
    for (name, expected), value in zip(checks, args, strict=False):
        if expected is None or value is None:
            continue
        accepted, description, is_list = expected
        items = value if is_list and isinstance(value, list) else [value]
        if (is_list and not isinstance(value, list)) or any(
                isinstance(v, bool) and bool not in accepted or not isinstance(v, accepted) for v in items):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise InputError(f"{name.replace('_', ' ')}: expected {description}, got {shown} "
                             f"({type(value).__name__})")


def _message(exc: Exception) -> str:
    """The text shown for a data error: OS errors get the engine's explanation (which file, what to do)."""
    return explain_os_error(exc) if isinstance(exc, OSError) else str(exc)


def _catching(fn: Callable[..., Any], on_error: Callable[[Exception, str], Any], verb: str) -> Callable[..., Any]:
    """``fn`` with its arguments checked against its annotations and its data errors turned into
    ``on_error(exc, message)`` (logged as "``fn`` ``verb``: ..."): the one implementation behind
    :func:`guarded`, :func:`reports_to` and :func:`refused`.

    The wrapper keeps the handler's signature (``functools.wraps``), so Gradio still injects
    ``gr.Progress``/event data.
    """
    checks = _input_checks(fn)  # once per handler, at decoration time (type hints are not free)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            check_inputs(checks, args)
            return fn(*args, **kwargs)
        except DATA_ERRORS as exc:
            log.warning("%s %s: %s", fn.__name__, verb, exc)
            return on_error(exc, _message(exc))
    return wrapper


def guarded(n_outputs: int, status_index: int = -1) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a handler with ``n_outputs`` outputs: on a data error, leave every output as it is
    (``gr.skip()``) except the status output at ``status_index``, which gets the message.

    Arguments are first checked against the handler's annotations (``str``, ``float``, ``list[str]``, optional
    or not): an API client can send any JSON value through a dropdown, and a number where a name belongs must get
    a message, not a ``TypeError`` deep in the service.
    """
    def on_error(exc: Exception, message: str) -> Any:
        outputs: list[Any] = [gr.skip() for _ in range(n_outputs)]
        outputs[status_index] = problem(message)
        return tuple(outputs) if n_outputs > 1 else outputs[0]

    return lambda fn: _catching(fn, on_error, "failed")


def reports_to(status: gr.components.Component) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a handler that returns ``{component: value}`` (for two or more outputs, ``status`` among them):
    on a data error only ``status`` changes, to the message; every other output is left as it is.

    The same argument checks as :func:`guarded`. (Gradio wraps a one-output handler's return value in a list
    before it looks for a dict, so a handler with a single output uses :func:`guarded` or :func:`refused`.)
    """
    return lambda fn: _catching(fn, lambda exc, message: {status: problem(message)}, "failed")


def refused(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a handler that has no status output: a wrong-typed argument or a data error becomes an error
    toast (``gr.Error``) with the message, instead of Gradio's generic "an error occurred"."""
    def on_error(exc: Exception, message: str) -> Any:
        raise gr.Error(message) from exc

    return _catching(fn, on_error, "refused")


def problems_text(problems: list[str], limit: int = 3) -> str:
    """A short status line for skipped files (first ``limit`` named), or ``""``."""
    if not problems:
        return ""
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return f"⚠ {len(problems)} unreadable image(s): " + "; ".join(problems[:limit]) + more
