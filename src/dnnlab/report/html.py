"""A tiny builder for self-contained HTML reports.

Studies and ``dnnlab report`` write one ``report.html`` each: a title, some prose, tables of
numbers, figures and a verdict. Everything is inline (CSS in a <style> tag, images as base64 data
URIs, no scripts), so the file can be mailed, archived or opened offline and still look right.
All text is escaped: run names and messages come from users and from exceptions.
"""

from __future__ import annotations

import base64
import math
import mimetypes
from html import escape
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from dnnlab.errors import DnnlabError
from dnnlab.io import write_text
from dnnlab.report.plots import figure_bytes

MISSING = "–"
NOTE_COLUMNS = ("note", "notes")   # a table's free-text columns: shown below it, numbered
SHORT_NOTE = 24                    # ... unless every note is at most this long
_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
     max-width:1100px;margin:2rem auto;padding:0 1.2rem;background:#fff}
h1{margin:0 0 .2rem;font-size:1.7rem} .subtitle{color:#59636e;margin:0 0 1.5rem}
h2{margin-top:2rem;border-bottom:1px solid #d1d9e0;padding-bottom:.2rem} h3{margin-top:1.4rem}
.table-wrap{max-width:100%;overflow-x:auto;margin:1rem 0}
table{border-collapse:collapse;font-size:14px}
th,td{padding:.35rem .75rem;border-bottom:1px solid #e5e9ee;text-align:left;vertical-align:top}
td{overflow-wrap:break-word;max-width:24rem} th{white-space:nowrap}
ol.notes{font-size:13px;color:#59636e;margin:-.4rem 0 1rem;padding-left:1.6rem}
th{background:#f6f8fa;font-weight:600} td.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:hover{background:#f6f8fa}
figure{margin:1.2rem 0} figure img{max-width:100%;height:auto;border:1px solid #e5e9ee}
figcaption{color:#59636e;font-size:13px;margin-top:.3rem}
.verdict{border-left:5px solid #8c959f;background:#f6f8fa;padding:.8rem 1rem;margin:1.2rem 0;
         font-size:16px}
.verdict.ok{border-color:#1a7f37;background:#dafbe1} .verdict.bad{border-color:#cf222e;background:#ffebe9}
"""


def format_value(value: Any, spec: str | None = None) -> str:
    """Numbers readably (4 significant digits unless ``spec`` says otherwise); None/NaN as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Page:
    """An HTML page built top to bottom; each method appends one block."""

    def __init__(self, title: str, subtitle: str = ""):
        """Start a page; the title is also the browser tab's title."""
        self.title = title
        self.blocks = [f"<h1>{escape(title)}</h1>"]
        if subtitle:
            self.blocks.append(f'<p class="subtitle">{escape(subtitle)}</p>')

    def heading(self, text: str, level: int = 2) -> Page:
        """A section heading (h2 by default; h1 is the page title)."""
        level = min(max(int(level), 1), 6)
        self.blocks.append(f"<h{level}>{escape(str(text))}</h{level}>")
        return self

    def paragraph(self, text: str) -> Page:
        """A paragraph of plain (escaped) text."""
        self.blocks.append(f"<p>{escape(str(text))}</p>")
        return self

    def bullets(self, items) -> Page:
        """An unordered list, one item per entry."""
        lis = "".join(f"<li>{escape(str(item))}</li>" for item in items)
        self.blocks.append(f"<ul>{lis}</ul>")
        return self

    def table(self, rows: list[dict], columns: list[str] | None = None, *,
              formats: dict[str, str] | None = None) -> Page:
        """A table of ``rows``; columns default to the rows' keys in first-seen order.

        ``formats`` maps a column to a format spec (e.g. ``".2%"``, ``".4f"``); numeric cells are
        right-aligned so digits line up, missing values show as a dash. A wide table scrolls
        inside its own box, so the page keeps the window's width; a ``note`` column of sentences
        is shown below the table as a numbered list, its cells holding the numbers, so a row
        stays one line high instead of wrapping a paragraph into a narrow column.
        """
        if columns is None:
            columns = list(dict.fromkeys(key for row in rows for key in row))
        formats = formats or {}
        notes: list[str] = []
        long_notes = {c for c in columns if str(c).lower() in NOTE_COLUMNS
                      and any(len(str(r.get(c) or "")) > SHORT_NOTE for r in rows)}
        head = "".join(f"<th>{escape(str(c))}</th>" for c in columns)
        body = []
        for row in rows:
            cells = []
            for c in columns:
                v = row.get(c)
                num = isinstance(v, (int, float)) and not isinstance(v, bool)
                cls = ' class="num"' if num else ""
                text = format_value(v, formats.get(c))
                if c in long_notes and v:
                    notes.append(text)
                    text = f"[{len(notes)}]"
                cells.append(f"<td{cls}>{escape(text)}</td>")
            body.append(f"<tr>{''.join(cells)}</tr>")
        listed = "".join(f"<li>{escape(n)}</li>" for n in notes)
        self.blocks.append(f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
                           f"<tbody>{''.join(body)}</tbody></table></div>"
                           + (f'<ol class="notes">{listed}</ol>' if notes else ""))
        return self

    def figure(self, fig_or_png_path: Figure | str | Path, caption: str = "") -> Page:
        """Embed a matplotlib figure (rendered to PNG, then closed) or an image file, as base64."""
        if isinstance(fig_or_png_path, Figure):
            data, mime = figure_bytes(fig_or_png_path), "image/png"
        else:
            path = Path(fig_or_png_path)
            try:
                data = path.read_bytes()
            except OSError as e:
                raise DnnlabError(f"cannot embed {path} in the report: {e.strerror}; check the "
                                  "path") from None
            mime = mimetypes.guess_type(path.name)[0] or "image/png"
        uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        self.blocks.append(f'<figure><img src="{uri}" alt="{escape(caption)}">{cap}</figure>')
        return self

    def verdict(self, text: str, ok: bool | None = None) -> Page:
        """The answer a study gives, boxed: green when ``ok``, red when not, grey when undecided."""
        cls = {True: " ok", False: " bad", None: ""}[ok]
        self.blocks.append(f'<div class="verdict{cls}">{escape(str(text))}</div>')
        return self

    def to_html(self) -> str:
        """The whole document as one string."""
        body = "\n".join(self.blocks)
        return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                f"<title>{escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n"
                f"<body>\n{body}\n</body>\n</html>\n")

    def save(self, path: str | Path) -> Path:
        """Write the page atomically and return its path."""
        return write_text(path, self.to_html())
