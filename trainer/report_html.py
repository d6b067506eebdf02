"""report.md as one self-contained HTML file: figures embedded, no server, no JavaScript.

It converts exactly the markdown the trainer writes (headings, paragraphs, bullet lists whose
indented lines continue their item, pipe tables, fenced code, images, **bold** and `code`), not
markdown in general.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

__all__ = ["markdown_to_html"]

STYLE = """body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em;line-height:1.45}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.25em .6em}
th{background:#eef}td{text-align:right}td:first-child{text-align:left}img{max-width:100%}
pre{background:#f4f4f4;padding:.6em;overflow:auto}code{background:#f4f4f4}"""


def _is_item(line: str) -> bool:
    return line.lstrip().startswith(("* ", "- "))


def _inline(text: str, folder: Path) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)

    def image(match):
        # The text is escaped already; a quote must not end the attribute.
        alt, target = match.group(1).replace('"', "&quot;"), match.group(2)
        path = folder / target
        if not path.is_file():
            return f"[missing figure {html.escape(target)}]"
        data = base64.b64encode(path.read_bytes()).decode()
        return f'<img alt="{alt}" src="data:image/png;base64,{data}">'

    return re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", image, text)


def _table(rows: list[str], folder: Path) -> str:
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    head, body = cells[0], cells[2:]  # cells[1] is the |---| row under the header
    out = ["<table><thead><tr>" + "".join(f"<th>{_inline(c, folder)}</th>" for c in head) + "</tr></thead>",
           "<tbody>"]
    out += ["<tr>" + "".join(f"<td>{_inline(c, folder)}</td>" for c in r) + "</tr>" for r in body]
    return "\n".join(out + ["</tbody></table>"])


def markdown_to_html(text: str, folder, title: str) -> str:
    """The report's markdown as a standalone page; images under ``folder`` are embedded."""
    folder = Path(folder)
    parts, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(html.escape(lines[i]))
                i += 1
            parts.append("<pre>" + "\n".join(block) + "</pre>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            parts.append(f"<h{level}>{_inline(line[level:].strip(), folder)}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            parts.append(_table(rows, folder))
            continue
        elif _is_item(line):
            items: list[list[str]] = []
            while i < len(lines):
                current = lines[i]
                if _is_item(current):
                    items.append([current.lstrip()[2:]])
                elif current.startswith("  ") and current.strip():  # an indented line continues its item
                    items[-1].append(current.strip())
                else:
                    break
                i += 1
            parts.append("<ul>" + "".join("<li>" + "<br>".join(_inline(t, folder) for t in item) + "</li>"
                                          for item in items) + "</ul>")
            continue
        elif line.strip():
            paragraph = [line]
            while (i + 1 < len(lines) and lines[i + 1].strip()
                   and not (lines[i + 1].startswith(("#", "|", "```")) or _is_item(lines[i + 1]))):
                i += 1
                paragraph.append(lines[i])
            parts.append(f"<p>{_inline(' '.join(paragraph), folder)}</p>")
        i += 1
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
