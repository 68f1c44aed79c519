"""Turning engine errors into messages in the UI, so one bad file or vanished folder never breaks the app."""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import gradio as gr

from pss.errors import PssError

log = logging.getLogger(__name__)

# What a handler may fail with because of the data: engine errors, and OS errors from files that vanish
# between a check and a read. Anything else is a bug and goes to Gradio's own error toast and the log.
DATA_ERRORS = (PssError, OSError)


def problem(message: str) -> str:
    """Show ``message`` as a warning toast and return it as status text (``⚠ ...``)."""
    gr.Warning(message)
    return f"⚠ {message}"


def guarded(n_outputs: int, status_index: int = -1) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a handler with ``n_outputs`` outputs: on a data error, leave every output as it is
    (``gr.skip()``) except the status output at ``status_index``, which gets the message.

    The wrapper keeps the handler's signature, so Gradio still injects ``gr.Progress``/event data.
    """
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except DATA_ERRORS as exc:
                log.warning("%s failed: %s", fn.__name__, exc)
                outputs: list[Any] = [gr.skip() for _ in range(n_outputs)]
                outputs[status_index] = problem(str(exc))
                return tuple(outputs) if n_outputs > 1 else outputs[0]
        return wrapper
    return decorate


def problems_text(problems: list[str], limit: int = 3) -> str:
    """A short status line for skipped files (first ``limit`` named), or ``""``."""
    if not problems:
        return ""
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return f"⚠ {len(problems)} unreadable image(s): " + "; ".join(problems[:limit]) + more
