"""The app's widgets, one per module."""

from imbtui.tui.widgets.class_chart import ClassCountChart
from imbtui.tui.widgets.class_curves import ClassCurves, ClassLine
from imbtui.tui.widgets.compare_row import CompareRow
from imbtui.tui.widgets.config_panel import ConfigPanel
from imbtui.tui.widgets.curve_pair import CurvePair
from imbtui.tui.widgets.metric_row import MetricRow, fmt_range, fmt_value
from imbtui.tui.widgets.runs_table import RunsTable
from imbtui.tui.widgets.shared_sparkline import SharedSparkline, resample, sparkline_rows

__all__ = [
    "ClassCountChart",
    "ClassCurves",
    "ClassLine",
    "CompareRow",
    "ConfigPanel",
    "CurvePair",
    "MetricRow",
    "RunsTable",
    "SharedSparkline",
    "fmt_range",
    "fmt_value",
    "resample",
    "sparkline_rows",
]


def __getattr__(name: str) -> object:
    # The SQL screen's widgets pull in TextArea and textual-fastdatatable: load them when first used
    # so the runs screen paints sooner.
    if name == "QueryEditor":
        from imbtui.tui.widgets.query_editor import QueryEditor

        return QueryEditor
    if name == "ResultsTable":
        from imbtui.tui.widgets.results_table import ResultsTable

        return ResultsTable
    raise AttributeError(name)
