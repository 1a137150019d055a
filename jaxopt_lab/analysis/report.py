"""The report of an experiment: Markdown, self-contained HTML, PNG figures and CSV tables.

`write_report(workdir)` reads the experiment directory, computes the findings and writes
`WORKDIR/report/`:

* `report.md` and `report.html` (the same document; the HTML embeds its figures as base64 PNG),
  opening with the verdict (`verdict.verdict`),
* `lr_sensitivity.png`, `learning_curves.png`, `tuning_curves.png`, `effects.png`,
  `two_factor.png` (each where it has something to show),
* a follow-up's "Follows from" and every finished sweep's "Next experiment" (`analysis.followup`),
* `comparison.csv`, `pairs.csv`, `sensitivity.csv`, `lr_curves.csv`, `tuning_curves.csv`,
  `effects.csv`, `compute.csv`.

Every number of the text comes from the CSV files' strings (the files hold every digit; the
text rounds a mean and its interval to the interval's precision, `document.rounded`); the HTML
links each CSV file. Every file is written atomically. TensorBoard summaries are not written.
"""

from __future__ import annotations

import dataclasses
import os

from jaxopt_lab import files
from jaxopt_lab.analysis import adaptive, followup, plots, results, scale
from jaxopt_lab.analysis import findings as fnd
from jaxopt_lab.analysis import report_sections as sections
from jaxopt_lab.analysis import report_tables as tb
from jaxopt_lab.analysis import verdict as vd
from jaxopt_lab.analysis.document import Document, to_html, to_markdown
from jaxopt_lab.analysis.report_decisions import comparison_section, verdict_section

REPORT_DIR = "report"
SECTIONS = ("Verdict", "Fair comparison", "Learning-rate sensitivity", "Tuning curves",
            "Hyperparameter effects", "Learning curves", "Setup", "Compute", "Methods",
            "Next experiment")  # a follow-up's report also has "Follows from", after the verdict



def build(f: fnd.Findings, v: vd.Verdict
          ) -> tuple[Document, dict[str, bytes], dict[str, tuple[list, list]]]:
  """The document, its figures (filename -> PNG) and its tables (filename -> (columns, rows))."""
  exp = f.experiment
  figures = {}
  for name, draw in (("lr_sensitivity.png", plots.lr_sensitivity),
                     ("learning_curves.png", plots.learning_curves),
                     ("tuning_curves.png", plots.tuning_curves),
                     ("effects.png", plots.effects),
                     ("two_factor.png", plots.two_factor)):
    fig = draw(f)
    if fig is not None:
      figures[name] = plots.png(fig)

  comp, prs, sens = tb.comparison_rows(f), tb.pair_rows(f), tb.sensitivity_rows(f)
  eff, comp_rows = tb.effects_rows(f), tb.compute_table_rows(f)
  tune = tb.tuning_rows(f)
  tables = {"comparison.csv": (tb.COMPARISON_COLUMNS, comp), "pairs.csv": (tb.PAIR_COLUMNS, prs),
            "sensitivity.csv": (tb.SENSITIVITY_COLUMNS, sens),
            "lr_curves.csv": (tb.LR_CURVE_COLUMNS, tb.lr_curve_rows(f)),
            "tuning_curves.csv": (tb.TUNING_COLUMNS, tune),
            "effects.csv": (tb.EFFECTS_COLUMNS, eff),
            "compute.csv": (tb.COMPUTE_COLUMNS, comp_rows)}

  doc = Document()
  doc.heading(1, f"Experiment report: `{os.path.basename(os.path.abspath(exp.workdir))}`")
  if not exp.progress.complete:
    doc.banner("Incomplete sweep: " + exp.progress.describe()
               + ". This report shows the finished points only.")
  verdict_section(doc, f, v, comp)
  followup.follows_from(doc, exp)
  comparison_section(doc, f, comp, prs)
  sections.sensitivity(doc, f, sens, _have(figures, "lr_sensitivity.png"))
  sections.tuning(doc, f, tune, _have(figures, "tuning_curves.png"))
  sections.effects(doc, f, eff, _have(figures, "effects.png"), _have(figures, "two_factor.png"))
  sections.learning(doc, f, _have(figures, "learning_curves.png"))
  more_figures, more_tables = adaptive.section(doc, exp.workdir)  # nothing for a fixed design
  figures.update(more_figures)
  tables.update(more_tables)
  more_figures, more_tables = scale.section(doc, exp.workdir)  # nothing without a scale factor
  figures.update(more_figures)
  tables.update(more_tables)
  sections.setup(doc, f)
  sections.compute(doc, f, comp_rows)
  sections.methods(doc, f)
  followup.next_experiment(doc, f)
  doc.para("Tables: " + ", ".join(f"[{name}]({name})" for name in tables) + ".")
  return doc, figures, tables


def _have(figures: dict[str, bytes], name: str) -> str | None:
  return name if name in figures else None


@dataclasses.dataclass(frozen=True)
class Written:
  """What `write` wrote and what the console should end with."""

  markdown: str  # path of report.md
  html: str  # path of report.html
  verdict: vd.Verdict
  progress: results.Progress

  def console_lines(self) -> list[str]:
    """The verdict sentences, an incomplete sweep's state, and where the report is."""
    lines = self.verdict.lines()
    if not self.progress.complete:
      lines.append(f"Incomplete: {self.progress.finished} of {self.progress.design_points} points "
                   "finished; the report shows the finished points only.")
    return lines + [f"Report: {self.html}"]


def write(workdir: str | os.PathLike, *, num_resamples: int = 2000, seed: int = 0) -> Written:
  """Analyses the experiment in `workdir` and writes `workdir/report/`.

  Args:
    workdir: an experiment directory (config.json and design.csv at least).
    num_resamples: bootstrap resamples (the tuning curves' bands).
    seed: seed of the bootstrap.

  Returns:
    The paths written and the verdict.

  Raises:
    FileNotFoundError: `workdir` is not an experiment directory (the message names the
      directory and the missing files).
    ValueError: the experiment's metric is not in its files.
  """
  exp = results.load_experiment(workdir)
  f = fnd.analyse(exp, num_resamples=num_resamples, seed=seed)
  v = vd.verdict(f)
  doc, figures, tables = build(f, v)
  out = os.path.join(exp.workdir, REPORT_DIR)
  for name, png in figures.items():
    files.atomic_write_bytes(os.path.join(out, name), png)
  for name, (columns, rows) in tables.items():
    files.atomic_write_csv(os.path.join(out, name), rows, columns)
  html_path = os.path.join(out, "report.html")
  files.atomic_write_text(html_path,
                          to_html(doc, figures, f"Report: {os.path.basename(exp.workdir)}"))
  path = os.path.join(out, "report.md")
  files.atomic_write_text(path, to_markdown(doc))
  return Written(path, html_path, v, exp.progress)


def write_report(workdir: str | os.PathLike, *, num_resamples: int = 2000, seed: int = 0) -> str:
  """`write`, returning the path of report.md."""
  return write(workdir, num_resamples=num_resamples, seed=seed).markdown

