"""Helpers shared by every test folder (``from support import ...``; ``tests/conftest.py`` puts ``tests/`` on the
path): waiting for a condition, a free port, a raw HTTP GET."""
from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit


def wait_for(condition: Callable[[], object], deadline_s: float = 180.0, poll_s: float = 0.1) -> None:
    """Return once ``condition()`` is truthy, checking every ``poll_s``; AssertionError after ``deadline_s``.

    The deadline only stops a broken test from hanging: tests never assert on how long anything took."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not reached before the deadline")
        time.sleep(poll_s)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it; another process may take it before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """(status, body) of GET ``path`` on the server of ``url``, sent exactly as written: no client-side
    normalisation of ``..`` or percent-escapes (``httpx`` would clean up the traversals the tests try)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
