"""The app's error wrappers (``pss_app.feedback``): ``guarded``, ``reports_to`` and ``refused`` check arguments
the same way and turn the same data errors into the same message; only where the message goes differs."""
from __future__ import annotations

import gradio as gr
import pytest

from pss.errors import DatasetError
from pss_app.feedback import guarded, refused, reports_to

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # gr.Warning outside a request is a warning

WRONG_TYPE = "⚠ user name: expected text (a name or id), got 37 (int)"


def _handler(user_name: str, k_value: float) -> str:
    if user_name == "gone":
        raise DatasetError("user 'gone' has no folder")
    if user_name == "vanished":
        raise FileNotFoundError(2, "No such file or directory", "/ws/data/personal/vanished/a.jpg")
    return f"{user_name}/K{int(k_value)}"


def test_guarded_puts_the_message_in_the_status_output_and_skips_the_others() -> None:
    one = guarded(1)(_handler)

    @guarded(3, status_index=1)
    def three(user_name: str, k_value: float) -> tuple[str, str, str]:
        return _handler(user_name, k_value), "", "x"

    assert one("id1", 4.0) == "id1/K4"
    assert one(37, 4.0) == WRONG_TYPE
    assert one("gone", 4.0) == "⚠ user 'gone' has no folder"
    skipped, status, other = three("gone", 4.0)
    assert status == "⚠ user 'gone' has no folder" and skipped == other == gr.skip()


def test_reports_to_changes_only_the_status_component() -> None:
    status, value = gr.Markdown(render=False), gr.Textbox(render=False)

    @reports_to(status)
    def handler(user_name: str, k_value: float) -> dict:  # (the checks read the annotations: a lambda has none)
        return {value: _handler(user_name, k_value), status: ""}

    assert handler("id1", 4.0) == {value: "id1/K4", status: ""}
    assert handler(37, 4.0) == {status: WRONG_TYPE}
    assert handler("gone", 4.0) == {status: "⚠ user 'gone' has no folder"}


def test_refused_raises_the_same_message_as_an_error_toast() -> None:
    handler = refused(_handler)
    assert handler("id1", 4.0) == "id1/K4"
    with pytest.raises(gr.Error) as wrong:
        handler(37, 4.0)
    assert wrong.value.message == WRONG_TYPE.removeprefix("⚠ ")
    with pytest.raises(gr.Error) as vanished:
        handler("vanished", 4.0)
    assert vanished.value.message == guarded(1)(_handler)("vanished", 4.0).removeprefix("⚠ ")
    assert "vanished/a.jpg" in vanished.value.message  # the OS error is explained, naming the file


def test_the_wrappers_keep_the_handler_signature() -> None:
    """Gradio reads the signature to inject gr.Progress / event data and to describe the API."""
    import inspect

    for wrap in (guarded(1), reports_to(gr.Markdown(render=False)), refused):
        assert list(inspect.signature(wrap(_handler)).parameters) == ["user_name", "k_value"]
        assert wrap(_handler).__name__ == "_handler"
