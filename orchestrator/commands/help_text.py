"""Help pages that read well on 80 columns: flag names whole, example lines as written.

Typer's rich help squeezes its option table into the terminal, cutting long flag names
(`--checkpoint-s-pe…` at 80 columns), and joins the lines of every paragraph. Click's plain
layout lists each flag whole (its help moves to the next line when the name is long). This
formatter also never breaks a word at a hyphen (`--poll-` / `interval`), and keeps each line
of an `Example` paragraph on a line of its own, wrapping a long one with a hanging indent.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from typing import Any

try:  # typer >= 0.20 vendors click as typer._click
    from typer._click import Context, HelpFormatter
except ImportError:  # pragma: no cover
    from click import Context, HelpFormatter

EXAMPLE_PARAGRAPH = re.compile(r"^\s*Examples?\b")
HANGING_INDENT = "    "


def wrap(text: str, width: int, indent: str = "", hanging: str = "") -> list[str]:
    """Lines of at most `width` columns, breaking only at spaces (a flag is never split)."""
    lines = textwrap.wrap(
        text,
        width,
        initial_indent=indent,
        subsequent_indent=hanging,
        break_on_hyphens=False,
        break_long_words=False,
    )
    return lines or [""]


class PlainHelpFormatter(HelpFormatter):
    def write_text(self, text: str) -> None:
        indent = " " * self.current_indent
        blocks = []
        for paragraph in re.split(r"\n[ \t]*\n", text.strip("\n")):
            lines = paragraph.splitlines()
            if lines and lines[0].strip() == "\b":  # click's marker: keep the block as written
                blocks.append([indent + line for line in lines[1:]])
            elif EXAMPLE_PARAGRAPH.match(paragraph):
                # A line indented in the docstring continues the command above it.
                block = []
                for line in lines:
                    first = indent + HANGING_INDENT if line[:1].isspace() else indent
                    block += wrap(line.strip(), self.width, first, indent + HANGING_INDENT)
                blocks.append(block)
            else:
                blocks.append(
                    wrap(" ".join(line.strip() for line in lines), self.width, indent, indent)
                )
        self.write("\n\n".join("\n".join(block) for block in blocks) + "\n")

    def write_dl(
        self, rows: Iterable[tuple[str, str]], col_max: int = 30, col_spacing: int = 2
    ) -> None:
        rows = list(rows)
        first_col = min(max((len(first) for first, _ in rows), default=0), col_max) + col_spacing
        column = " " * (self.current_indent + first_col)
        text_width = max(self.width - first_col - 2, 10)
        for first, second in rows:
            self.write(f"{'':>{self.current_indent}}{first}")
            if not second:
                self.write("\n")
                continue
            if len(first) <= first_col - col_spacing:
                self.write(" " * (first_col - len(first)))
            else:  # a long flag keeps its whole name; its help starts on the next line
                self.write("\n" + column)
            lines = wrap(" ".join(second.split()), text_width)
            self.write(lines[0] + "\n")
            for line in lines[1:]:
                self.write(column + line + "\n")


class PlainHelpContext(Context):
    formatter_class = PlainHelpFormatter


def use_plain_help(command: Any) -> None:
    """This command and every command under it print their help with PlainHelpFormatter."""
    command.context_class = PlainHelpContext
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None  # typer: click's layout instead of rich panels
    for sub in getattr(command, "commands", {}).values():
        use_plain_help(sub)
