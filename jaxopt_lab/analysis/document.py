"""A small document model rendered to Markdown and to self-contained HTML, and the number
formatting the report's text and CSV files share (one string per number).

The HTML embeds its figures as base64 PNG and loads nothing from elsewhere; wide tables scroll
inside their own box, so the page itself never scrolls sideways on a narrow screen.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import math
import re

import numpy as np

NO_INTERVAL = "n=1, no interval"

# ---------------------------------------------------------------------------------------------
# Formatting: one string per number, shared by the CSV files and the text.


def fmt(x, spec: str = ".5g") -> str:
  """A number as text; "" for NaN/None. Integers stay integers."""
  if x is None:
    return ""
  if isinstance(x, (bool, np.bool_)):
    return str(bool(x))
  if isinstance(x, (int, np.integer)):
    return str(int(x))
  x = float(x)
  if math.isnan(x):
    return ""
  return format(x, spec)


def fmt_p(p: float) -> str:
  return fmt(p, ".3g")


def fmt_lr(lr: float) -> str:
  return fmt(lr, ".3g")


def cell(text: str) -> str:
  """A formatted number as shown in the text: "n/a" for a missing one."""
  return text if text != "" else "n/a"


def rounded(value: float, low: float, high: float) -> tuple[str, str, str]:
  """A mean and its interval as text, to the interval's precision: two significant digits of
  the half-width (a loss of 0.8291 with [0.77, 0.89] reads 0.829 [0.770, 0.888]; the CSV
  files keep every digit). Without a finite interval, `fmt`'s 5 significant digits."""
  half = (high - low) / 2.0
  if not (math.isfinite(half) and half > 0 and math.isfinite(value)):
    return fmt(value), fmt(low), fmt(high)
  places = max(1 - math.floor(math.log10(half)), 0)
  # More places where rounding would carry an end onto 0 or across it: a printed interval
  # keeps the side of 0 it lies on, so it reads as the decision beside it does.
  while places < 15 and any((float(format(x, f".{places}f")) > 0) != (x > 0)
                            or (float(format(x, f".{places}f")) < 0) != (x < 0)
                            for x in (low, high)):
    places += 1
  return tuple(format(x, f".{places}f") for x in (value, low, high))


def interval_text(low: str, high: str, n: int) -> str:
  if n == 1:
    return NO_INTERVAL
  if low == "" or high == "":
    return "n/a"
  return f"[{low}, {high}]"



# ---------------------------------------------------------------------------------------------
# A small document model rendered to Markdown and HTML.


@dataclasses.dataclass
class Document:
  blocks: list[tuple] = dataclasses.field(default_factory=list)

  def heading(self, level: int, text: str) -> None:
    self.blocks.append(("heading", level, text))

  def para(self, text: str) -> None:
    self.blocks.append(("para", text))

  def banner(self, text: str) -> None:
    self.blocks.append(("banner", text))

  def box(self, lines: list[str]) -> None:
    """The verdict: a framed block of sentences, the first one in bold."""
    self.blocks.append(("box", lines))

  def bullets(self, items: list[str]) -> None:
    self.blocks.append(("bullets", items))

  def table(self, columns: list[str], rows: list[list[str]]) -> None:
    self.blocks.append(("table", columns, rows))

  def figure(self, filename: str, caption: str) -> None:
    self.blocks.append(("figure", filename, caption))


def _md_cell(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(doc: Document) -> str:
  out = []
  for block in doc.blocks:
    kind = block[0]
    if kind == "heading":
      out.append("#" * block[1] + " " + block[2])
    elif kind == "para":
      out.append(block[1])
    elif kind == "banner":
      out.append("> **" + block[1] + "**")
    elif kind == "box":
      lines = block[1]
      out.append("\n>\n".join(["> **" + lines[0] + "**"] + ["> " + t for t in lines[1:]]))
    elif kind == "bullets":
      out.append("\n".join("- " + item for item in block[1]))
    elif kind == "table":
      columns, rows = block[1], block[2]
      lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |",
               "|" + "---|" * len(columns)]
      lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
      out.append("\n".join(lines))
    elif kind == "figure":
      out.append(f"![{block[2]}]({block[1]})\n\n*{block[2]}*")
  return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
  text = html.escape(text, quote=False)
  text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
  text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
  # Markdown links to the files beside the report (CSV tables): relative, so the folder moves.
  return re.sub(r"\[([^\]]+)\]\(([\w./-]+)\)", r'<a href="\2">\1</a>', text)


def _anchor(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


_CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }
.scroll { overflow-x: auto; max-width: 100%; margin: 1em 0; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
.banner { background: #fff3cd; border: 1px solid #e0b000; padding: 0.8em; font-weight: bold; }
.verdict { background: #eef6ee; border: 2px solid #3a7d44; padding: 0.6em 1em; }
.verdict p { margin: 0.4em 0; } .verdict p:first-child { font-weight: bold; }
figure { margin: 1em 0; } img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2em; }
nav.contents ul { columns: 2; margin: 0.3em 0 1em; } .warn { color: #8a4b00; }
"""


def to_html(doc: Document, images: dict[str, bytes], title: str) -> str:
  """A self-contained HTML page: figures embedded as base64 PNG, no external resources."""
  out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         '<meta name="viewport" content="width=device-width, initial-scale=1">',
         f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style></head><body>"]
  sections = [b[2] for b in doc.blocks if b[0] == "heading" and b[1] == 2]
  for block in doc.blocks:
    kind = block[0]
    if kind == "heading":
      out.append(f'<h{block[1]} id="{_anchor(block[2])}">{_inline_html(block[2])}</h{block[1]}>')
      if block[1] == 1 and sections:  # the contents, under the title
        out.append('<nav class="contents"><strong>Contents</strong><ul>' + "".join(
            f'<li><a href="#{_anchor(s)}">{_inline_html(s)}</a></li>' for s in sections)
                   + "</ul></nav>")
    elif kind == "para":
      out.append(f"<p>{_inline_html(block[1])}</p>")
    elif kind == "banner":
      out.append(f'<div class="banner">{_inline_html(block[1])}</div>')
    elif kind == "box":
      out.append('<div class="verdict">' + "".join(f"<p>{_inline_html(t)}</p>" for t in block[1])
                 + "</div>")
    elif kind == "bullets":
      out.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in block[1]) + "</ul>")
    elif kind == "table":
      head = "".join(f"<th>{_inline_html(c)}</th>" for c in block[1])
      body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>"
                     for row in block[2])
      # A wide table scrolls inside its own box on a narrow screen; the page never does.
      out.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}'
                 "</tbody></table></div>")
    elif kind == "figure":
      data = base64.b64encode(images[block[1]]).decode("ascii")
      out.append(f'<figure><img alt="{html.escape(block[2])}" '
                 f'src="data:image/png;base64,{data}"><figcaption>{_inline_html(block[2])}'
                 "</figcaption></figure>")
  out.append("</body></html>")
  return "\n".join(out) + "\n"
