"""Typer options made from the training options' one declaration (trainer/options.py).

`with_options(func, options)` gives a command function one keyword parameter per option, with the
option's flag, type, default, bounds, choices and help text, so `imbtui train` and `imbtui sweep`
never restate an option (Harlequin's `option.to_click()` loop, in Typer's terms). Imports nothing
heavy: `imbtui --help` stays fast.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterable
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from trainer.options import Option

_TYPES: dict[str, type] = {"float": float, "int": int, "str": str, "path": Path, "ints": str, "floats": str,
                           "bool": bool}
_KW = inspect.Parameter.KEYWORD_ONLY


@cache
def choice_enum(option: Option) -> type[Enum]:
    """A str Enum of a strict option's choices (Typer shows and checks an Enum's values)."""
    name = "".join(part.title() for part in option.name.split("_"))
    return Enum(name, [(c, c) for c in option.choices or ()], type=str)  # type: ignore[return-value]


def parameter(option: Option, as_list: bool = False, panel: str | None = None
              ) -> inspect.Parameter:
    """The Typer parameter of one option (`as_list`: a sweep axis, several values)."""
    typ: Any = _TYPES[option.kind]
    default = option.default
    if isinstance(default, tuple):  # ints / floats: the text the flag takes
        default = ",".join(f"{v:g}" for v in default)
    help_text = option.full_help()
    kwargs: dict[str, Any] = {"hidden": option.hidden, "rich_help_panel": panel}
    if option.minimum is not None:
        kwargs["min"] = option.minimum
    if option.maximum is not None:
        kwargs["max"] = option.maximum
    if option.strict and option.choices:
        typ = choice_enum(option)
        default = None if default is None else typ(default)
    decls = [option.cli_flag]
    if option.kind == "bool":
        decls = [f"{option.cli_flag}/--no-{option.cli_flag[2:]}"]
    if as_list:
        typ, default = Optional[list[typ]], None
        help_text += f" Several values (e.g. {option.cli_flag} A B C): one run for each."
        kwargs["show_default"] = False
    elif default is None:
        typ = Optional[typ]
        kwargs["show_default"] = False
    annotation = Annotated[typ, typer.Option(*decls, help=help_text, **kwargs)]
    return inspect.Parameter(option.name, _KW, default=default, annotation=annotation)


def with_options(func: Callable[..., Any], options: Iterable[Option], lists: Iterable[str] = (),
                 panel: str | None = None) -> Callable[..., Any]:
    """`func(ctx, <its own options>, **values)` with one parameter per option added before its
    own keyword parameters; the option values reach `**values` under the options' names."""
    sig = inspect.signature(func)
    hints = typing.get_type_hints(func, include_extras=True)  # string annotations, evaluated
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    lead = [p for p in own if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            and p.default is inspect.Parameter.empty]
    rest = [p.replace(kind=_KW) for p in own if p not in lead]
    as_lists = set(lists)
    made = [parameter(o, o.name in as_lists, panel) for o in options]
    func.__signature__ = sig.replace(parameters=[*lead, *made, *rest])  # type: ignore[attr-defined]
    func.__annotations__ = {p.name: p.annotation for p in [*lead, *made, *rest]}
    return func


def values_of(params: dict[str, Any], options: Iterable[Option]) -> dict[str, Any]:
    """{option name: plain value} from a command's parsed parameters (Enum members as values,
    also inside a sweep axis' list)."""
    def plain(v: Any) -> Any:
        if isinstance(v, list):
            return [plain(x) for x in v]
        return getattr(v, "value", v)

    return {o.name: plain(params.get(o.name)) for o in options if o.name in params}
