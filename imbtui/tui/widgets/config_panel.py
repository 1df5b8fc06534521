"""A run's identity and configuration, compact enough for an 80-column terminal."""

from __future__ import annotations

import json
from typing import Any

from textual.widgets import Static

from imbtui.tui.widgets.runs_table import STATUS, method


def config_text(meta: dict[str, Any]) -> str:
    """Rich markup: status, dataset and imbalance, model and method, optimisation, progress."""
    config = json.loads(meta.get("config") or "{}") if meta else {}
    status = meta.get("status") or "?"
    mark, word, style = STATUS.get(status, ("?", status, "dim"))
    lines = [
        f"[{style}]{mark} {word}[/]  [b]{meta.get('name', '')}[/]",
        f"[dim]run[/] {meta.get('run_id', '')}",
        f"[dim]data[/] {meta.get('dataset')} {meta.get('profile')} ×{meta.get('ratio') or 0:g}"
        f" · {config.get('n_train', '?')} train",
        f"[dim]model[/] {meta.get('model')} · {method(meta)} · seed {meta.get('seed')}",
        f"[dim]optim[/] lr {meta.get('lr')} · bs {meta.get('batch_size')} · "
        f"{meta.get('epochs')} ep · {meta.get('device')}",
        f"[dim]done[/] epoch {meta.get('epoch_done') or 0}/{meta.get('epochs')} · step "
        f"{meta.get('step_done') or 0}/{meta.get('total_steps') or '?'}",
    ]
    if meta.get("message"):
        lines.append(f"[red]{meta['message']}[/]")
    return "\n".join(lines)


class ConfigPanel(Static):
    DEFAULT_CSS = """
    ConfigPanel { width: 1fr; height: auto; }
    """

    def show_meta(self, meta: dict[str, Any]) -> None:
        self.update(config_text(meta))
