"""Small layout pieces shared by the tabs."""
from __future__ import annotations

import gradio as gr


def pager(prefix: str) -> tuple[gr.Button, gr.Number, gr.Button]:
    """A compact "◀ [page] ▶" row; element ids ``<prefix>-prev``, ``<prefix>-page``, ``<prefix>-next``."""
    with gr.Row(equal_height=True):
        prev = gr.Button("◀ Previous", size="sm", scale=1, min_width=90, elem_id=f"{prefix}-prev")
        page = gr.Number(1, show_label=False, container=False, precision=0, minimum=1, scale=1, min_width=70,
                         elem_id=f"{prefix}-page")
        nxt = gr.Button("Next ▶", size="sm", scale=1, min_width=90, elem_id=f"{prefix}-next")
    return prev, page, nxt
