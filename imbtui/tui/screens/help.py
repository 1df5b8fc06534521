"""The help screen: every key of every screen, and what each curve means."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from imbtui.tui.data.metrics import METRICS

KEYS = """\
# imbtui browse

**Anywhere** · `F1` help · `F2` runs · `F3` SQL · `Ctrl+Q` quit · `Ctrl+P` command palette

**Runs** · `↑↓` move · `Enter` open run · `Space` mark for comparison · `c` compare marked ·
`/` filter (type; `Enter` or `↓` back to the table, `Esc` clears) · `s` sort by next column ·
`S` reverse · click a header to sort by it · `w` save filter + sort as a view · `o` apply a saved
view · `d` delete run (asks first) · `r` reload · `q` quit. The filter takes words, qualifiers
(`ratio>=10`, `method:ldam*`, `status:running`, `dataset:mnist1d`, `seed:0`, `name:r100`) and
`/regex/`; all must match.

**Run** · `Esc` back · `e` step / epoch resolution · `m` smoothing (EMA off / 0.6 / 0.9) ·
`k` metric of the class rows · `v` chart of the metric row in focus · `r` reload ·
`↑↓ PgUp PgDn` scroll

**Compare** · `Esc` back · `e` step / epoch resolution · `m` smoothing · `a` all config keys
(default: only those that differ) · `v` chart

**Chart** · `Esc` back · `←→` cursor (`Shift` ×10, `Home`/`End`) · `↑↓` other metric · `l` log-y ·
`x` step / epoch / samples seen · `g` groups · `c` per-class lines · `s` seeds pooled or apart ·
`p` save as PNG

**SQL** · `Ctrl+R` (or `Ctrl+Enter`) runs the selection or the statement at the cursor ·
`Tab`/`Enter` accept a completion (`Esc` closes it) · `Ctrl+B` catalog · `Ctrl+G` cancel ·
`Ctrl+O` insert a named analysis · `Ctrl+T` history (`↑↓` in an empty editor: every earlier
statement on this store) · `Ctrl+S` export (.csv, .parquet, .json) · `Tab` editor ⇄ results.
Only read-only statements run (SELECT, WITH, DESCRIBE, EXPLAIN); the store is never written.

## Reading the curves

Majority curves are blue, minority curves orange. The two curves of one row, and every run's
curves on the compare screen, share **one y-axis** (its range is written beside the metric):
accuracies, confidence and prediction share are always drawn on 0–1, so a minority curve at
0.1 sits at the bottom while a majority curve at 0.85 sits near the top. A live run's curves
grow from left to right across the run's planned length. A group's accuracy, loss and
confidence are the mean over its classes of each class's own, as in every command. Step
resolution buckets the recorded steps to the screen width and divides each class's sums over the
bucket (accuracy = Σcorrect / Σn; a class absent from all of the bucket's batches is left out of
its group's mean); epoch resolution shows one point per epoch (train metrics from the eval pass
over the training set).
A row shows only when the run recorded its data: a `--dynamics minimal` run has no gradient
split, feature geometry, gradient probes or per-sample rows, so it shows none of their rows.

"""


def metrics_table() -> str:
    rows = ["| metric | axis | meaning |", "|---|---|---|"]
    axis = {"unit": "0–1", "zero": "0–max", "sym": "−1–1", "free": "min–max"}
    rows += [f"| {m.label} | {axis[m.scale]} | {m.help} |" for m in METRICS]
    return "\n".join(rows)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1,question_mark", "close", "close", id="help.close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body"):
            yield Markdown(KEYS + metrics_table() + "\n\nPress `Esc` to close.")

    def action_close(self) -> None:
        self.dismiss(None)
