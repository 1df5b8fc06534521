"""Save each screen of `imbtui browse` as the SVG screenshot Textual itself draws (for docs/app.md).

    python -m imbtui.tui.screenshots docs/screens [--store DIR] [--size 100x32]

Default store: the bundled sample runs. The runs screen, the third run's screen (ratio 100 CE in the
sample runs), the compare screen of the first three runs (ratios 1, 10, 100), the SQL screen with
a named query's result, and the help screen.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from textual.pilot import Pilot
from textual.worker import WorkerCancelled

from imbtui.tui.app import ImbtuiApp, make_app
from imbtui.tui.data.session import StoreSession
from imbtui.tui.sample import sample_store


async def settle(pilot: Pilot[None], rounds: int = 4, pause: float = 0.05) -> None:
    """Let workers finish and their messages be handled (a handler may start another worker).

    A worker started `exclusive` is cancelled when a newer one of its group replaces it; waiting on
    it then raises WorkerCancelled, which only means: look again (the newer worker is running)."""
    for _ in range(rounds):
        for _attempt in range(100):
            try:
                await pilot.app.workers.wait_for_complete()
                break
            except WorkerCancelled:
                await pilot.pause(0.02)
        await pilot.pause(pause)


async def shoot(app: ImbtuiApp, out: Path, size: tuple[int, int]) -> list[Path]:
    saved: list[Path] = []

    def save(name: str) -> None:
        saved.append(Path(app.save_screenshot(f"{name}.svg", str(out))))

    async with app.run_test(size=size) as pilot:
        await settle(pilot, pause=0.1)
        save("runs")
        keys = app.screen.table.keys
        # compare the cross-entropy runs (ratios 1, 10, 100 in the samples)
        await pilot.press("slash", *"method:ce", "enter")
        await settle(pilot, pause=0.1)
        await pilot.press("space", "down", "space", "down", "space", "c")
        await settle(pilot, pause=0.1)
        save("compare")
        # the ratio-100 cross-entropy run, and its test accuracy as a chart
        await pilot.press("escape", "slash", "escape", "slash", *"r100-ce", "enter", "enter")
        await settle(pilot, pause=0.1)
        save("run")
        app.screen.query_one("#metric-test_acc").focus()
        await pilot.press("v")
        await settle(pilot, pause=0.1)
        save("chart")
        await pilot.press("escape", "escape", "f3")
        await pilot.pause()
        app.screen.editor.load_text(
            "-- final test accuracy per run: balanced, majority, minority\n"
            "SELECT r.name, r.ratio, round(s.test_balanced, 3) AS balanced,\n"
            "       round(s.test_majority, 3) AS majority, round(s.test_minority, 3) AS minority\n"
            "FROM runs r JOIN run_summary_v s USING (run_id) ORDER BY r.ratio")
        app.screen.editor.cursor_blink = False
        await pilot.press("ctrl+r")
        await settle(pilot, pause=0.1)
        save("sql")
        await pilot.press("f1")
        await pilot.pause(0.3)
        save("help")
        assert len(keys) >= 1
    return saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--size", default="100x32")
    args = ap.parse_args()
    store = args.store or sample_store()
    if store is None:
        raise SystemExit("no sample runs in this installation; pass --store")
    app = make_app(store, use_sample=False)
    app.session = StoreSession(Path(store), sample=args.store is None)
    _add_summary_view(app.session)
    width, height = (int(v) for v in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    for path in asyncio.run(shoot(app, args.out, (width, height))):
        print(path)


def _add_summary_view(session: StoreSession) -> None:
    # The SQL picture joins the named query run_summary as a view, to keep its SQL short.
    from imbtui.queries import get_query

    session.refresh()
    with session._lock:
        assert session._con is not None
        session._con.execute(f"CREATE OR REPLACE VIEW run_summary_v AS {get_query('run_summary').sql}")


if __name__ == "__main__":
    main()
