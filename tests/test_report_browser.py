"""report.html and the comparison page in a real browser: headless Chromium at 800 px loads
every image and no table overflows the page (wide tables scroll inside their own box); the
comparison's links reach the reports they name.

Needs Debian's `chromium` package (`apt-get install -y chromium`; `.ci/run` installs it when it
runs as root); skipped with a message where it is absent.
"""

import json
import os
import re
import shutil
import subprocess

import fixtures_expdir as fx
import pytest

from jaxopt_lab.analysis import compare, report

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WIDTH = 800

# Runs after load; writes what it measured into the DOM, which --dump-dom prints.
_PROBE = """<script>window.addEventListener("load", () => {
  const page = document.documentElement.clientWidth;
  const result = {
    page: page, scroll_width: document.documentElement.scrollWidth,
    images: [...document.images].map(i => i.complete && i.naturalWidth > 0
                                     && i.getBoundingClientRect().right <= page + 0.5),
    // A table fits when it, or the box it scrolls in, ends inside the page.
    tables: [...document.querySelectorAll("table")].map(t => {
      let box = t;
      for (let e = t.parentElement; e && e !== document.body; e = e.parentElement) {
        if (["auto", "scroll"].includes(getComputedStyle(e).overflowX)) { box = e; break; }
      }
      return box.getBoundingClientRect().right <= page + 0.5;
    }),
  };
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});</script>"""


def _browser():
  found = [shutil.which(b) for b in BROWSERS if shutil.which(b)]
  if not found:
    pytest.skip("no headless Chromium (apt-get install -y chromium): report.html not rendered")
  return found[0]


def _measure(browser, html_path):
  run = subprocess.run(
      [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={WIDTH},1000",
       "--virtual-time-budget=10000", "--dump-dom", f"file://{html_path}"],
      capture_output=True, text=True, timeout=120)
  found = re.search(r'<pre id="probe">(.*?)</pre>', run.stdout, re.S)
  assert found, run.stderr[-2000:]
  return json.loads(found.group(1).replace("&quot;", '"'))


def test_report_renders_at_800_px(tmp_path):
  browser = _browser()
  fx.write_expdir(tmp_path / "x", optimizers=("adam", "sgd", "rmsprop"))
  html_path = report.write(tmp_path / "x", num_resamples=50).html
  page = open(html_path, encoding="utf-8").read()
  probe = tmp_path / "probe.html"
  probe.write_text(page.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
  got = _measure(browser, str(probe))
  assert WIDTH - 30 <= got["page"] <= WIDTH  # less a vertical scroll bar
  assert len(got["images"]) == page.count("<img") >= 3 and all(got["images"]), got
  assert len(got["tables"]) == page.count("<table>") >= 3 and all(got["tables"]), got
  assert got["scroll_width"] <= got["page"], got
  # The check can fail: without the scrolling boxes the wide comparison table spills over.
  bare = tmp_path / "bare.html"
  bare.write_text(probe.read_text(encoding="utf-8").replace('<div class="scroll">', "<div>"),
                  encoding="utf-8")
  spilled = _measure(browser, str(bare))
  assert spilled["scroll_width"] > spilled["page"] and not all(spilled["tables"]), spilled


def test_comparison_page_renders_at_800_px_with_working_links(tmp_path):
  browser = _browser()
  fx.write_expdir(tmp_path / "a", optimizers=("adam", "sgd", "rmsprop"))
  fx.write_expdir(tmp_path / "b", optimizers=("adam", "sgd"), seed=5)
  report.write(tmp_path / "a", num_resamples=50)  # a has a report to link; b has none
  html_path = compare.write([str(tmp_path / "a"), str(tmp_path / "b")], str(tmp_path / "out"),
                            num_resamples=50)
  page = open(html_path, encoding="utf-8").read()
  assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
  for target in re.findall(r'href="([^"#][^"]*)"', page):  # every file link resolves
    assert os.path.isfile(os.path.join(tmp_path / "out", target)), target
  assert 'href="../a/report/report.html"' in page
  probe = tmp_path / "out" / "probe.html"
  probe.write_text(page.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
  got = _measure(browser, str(probe))
  assert len(got["images"]) == page.count("<img") >= 1 and all(got["images"]), got
  assert len(got["tables"]) == page.count("<table>") >= 3 and all(got["tables"]), got
  assert got["scroll_width"] <= got["page"], got


def test_ci_installs_chromium_as_root():
  ci = open(os.path.join(os.path.dirname(__file__), "..", ".ci", "run"), encoding="utf-8").read()
  assert re.search(r"apt-get install -y .*chromium", ci) and '"$(id -u)" = 0' in ci
