"""The SQL editor: a multi-line TextArea with SQL highlighting (tree-sitter) and line numbers."""

from __future__ import annotations

from textual.widgets import TextArea


class QueryEditor(TextArea):
    """Tab moves focus on (to the results), so the keyboard can reach everything."""

    DEFAULT_CSS = """
    QueryEditor { height: 8; }
    """

    def __init__(self, text: str = "", **kwargs: object) -> None:
        language = "sql" if "sql" in self.available_languages_static() else None
        super().__init__(text, language=language, show_line_numbers=True, tab_behavior="focus",
                         soft_wrap=False, **kwargs)  # type: ignore[arg-type]

    @staticmethod
    def available_languages_static() -> set[str]:
        # Without the tree-sitter SQL grammar the editor still works, uncoloured.
        try:
            import tree_sitter_sql  # noqa: F401
        except ImportError:
            return set()
        return {"sql"}
