"""The `imbtui` command line: one Typer app whose commands are thin wrappers over the modules.

Commands live by group: imbtui/cli/training.py (train, data, sweep), results.py (runs, show, sql,
query, report) and store.py (browse, doctor, export); common.py holds the app and what they share.
Heavy modules (torch, the trainer, Textual) are imported inside the command that needs them, so
`imbtui --help`, `imbtui runs` and `imbtui sql` start fast. Every user error ends as one line on
stderr and exit code 2 (see `main`).
"""

from __future__ import annotations

import os
import sys

import typer

from imbtui.cli import results, store, training  # noqa: F401  (each registers its commands)
from imbtui.cli import study  # noqa: F401  (registers `imbtui study`)
from imbtui.cli.common import UserError, app
from imbtui.cli.training import _train_config  # noqa: F401  (the config of parsed options)

__all__ = ["app", "main", "run"]


# ==== entry point =================================================================================

def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line on stderr and exit code 2, never a traceback."""
    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else argv
    try:
        rv = command.main(args=args, prog_name="imbtui", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("imbtui: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # Typer's usage errors: bad options, values, commands
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":
            print(exc.format_message(), file=sys.stderr)
            return 2
        where = f" (see: imbtui {ctx.info_name} --help)" if ctx is not None and ctx.parent else ""
        print(f"imbtui: error: {exc.format_message()}{where}", file=sys.stderr)
        return exc.exit_code
    except UserError as exc:
        print(f"imbtui: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imbtui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return rv if isinstance(rv, int) else 0


def run() -> None:
    if "LOCAL_RANK" in os.environ:  # perhaps a torchrun worker (asking imports torch)
        from trainer.distributed import launched, leave

        if launched():  # exit without the interpreter's shutdown (why: distributed.leave)
            leave(_main_printing_tracebacks())
    sys.exit(main())


def _main_printing_tracebacks() -> int:
    """main's exit code; an unexpected error prints its traceback, as Python would, and gives 1."""
    try:
        return main()
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1
