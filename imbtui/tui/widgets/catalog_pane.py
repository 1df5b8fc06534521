"""The SQL screen's catalog: each view, table and macro of the store with its columns, their
types, and the semantic layer's definition of each (the text of docs/store.md).

A tree of names on top and, below it, the full definition of the highlighted node; Enter on a
node posts `CatalogPane.Insert` with its name, which the screen puts at the editor's cursor.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static, Tree

from imbtui.tui.data.sqlcatalog import Catalog

KIND_COLOUR = {"table": "green", "view": "cyan", "macro": "magenta"}


@dataclass(frozen=True)
class Node:
    """What a tree node stands for: its name, and the text shown below the tree."""

    name: str
    detail: str


class CatalogPane(Vertical):
    DEFAULT_CSS = """
    CatalogPane { width: 40%; min-width: 28; max-width: 64; border-left: tall $surface-lighten-1; }
    CatalogPane > Tree { height: 2fr; }
    CatalogPane > #catalog-detail { height: 1fr; min-height: 3; padding: 0 1;
                                    border-top: solid $surface-lighten-1; overflow-y: auto; }
    """

    @dataclass
    class Insert(Message):
        name: str

    def compose(self) -> ComposeResult:
        tree: Tree[Node] = Tree("catalog", id="catalog-tree")
        tree.show_root = False
        tree.guide_depth = 2
        yield tree
        yield Static("[dim]loading the catalog…[/]", id="catalog-detail")

    @property
    def tree(self) -> Tree[Node]:
        return self.query_one("#catalog-tree", Tree)

    @property
    def detail(self) -> Static:
        return self.query_one("#catalog-detail", Static)

    def show(self, catalog: Catalog) -> None:
        """List `catalog`, keeping which relations were expanded."""
        tree = self.tree
        opened = {n.data.name for n in tree.root.children if n.is_expanded and n.data}
        tree.clear()
        for entry in catalog.entries:
            colour = KIND_COLOUR.get(entry.kind, "white")
            call = f"({', '.join(entry.params)})" if entry.params else ""
            head = f"[b]{escape(entry.name)}[/]{escape(call)} [{colour}]{entry.kind}[/]"
            node = tree.root.add(head, data=Node(entry.name, f"[b]{escape(entry.name)}{escape(call)}"
                                                 f"[/] ({entry.kind})\n{escape(entry.doc)}"),
                                 expand=entry.name in opened)
            for col in entry.columns:
                text = f"{escape(col.name)} [dim]{escape(col.type)}[/]"
                detail = (f"[b]{escape(entry.name)}.{escape(col.name)}[/] {escape(col.type)}\n"
                          f"{escape(col.definition) or '[dim]no definition[/]'}")
                node.add_leaf(text, data=Node(col.name, detail))
        self.detail.update(f"[dim]{len(catalog.entries)} relations · Enter inserts a name · "
                           f"Ctrl+B hides[/]")

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[Node]) -> None:
        if event.node.data is not None:
            self.detail.update(event.node.data.detail)

    def on_tree_node_selected(self, event: Tree.NodeSelected[Node]) -> None:
        if event.node.data is not None and not event.node.children:
            self.post_message(self.Insert(event.node.data.name))
