"""What differs between the configs of compared runs (the `runs` view's `config` JSON).

`config_rows` flattens each run's config (nested keys as `a.b`) and lists every key with each run's
value, marking the keys whose values differ; a key a run lacks counts as a difference. No Textual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MISSING = "–"  # a run whose config has no such key


@dataclass(frozen=True)
class ConfigRow:
    key: str
    values: tuple[str, ...]  # one per run, as shown
    differs: bool


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{'loss_params': {'s': 30}} -> {'loss_params.s': 30}; an empty dict stays one key."""
    if not isinstance(config, dict) or (not config and prefix):
        return {prefix: config} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def parse_config(meta: dict[str, Any]) -> dict[str, Any]:
    """A run's config from its `runs` row (a JSON string there; a dict from run.json)."""
    raw = meta.get("config")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return flatten(raw) if isinstance(raw, dict) else {}


def config_rows(metas: list[dict[str, Any]]) -> list[ConfigRow]:
    """Every config key of the runs, in first-seen order, with each run's value."""
    configs = [parse_config(m) for m in metas]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    rows = []
    for key in keys:
        values = tuple(show(c[key]) if key in c else MISSING for c in configs)
        rows.append(ConfigRow(key, values, len(set(values)) > 1))
    return rows
