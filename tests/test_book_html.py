"""The HTML book typesets its math offline: a page built with the book's own _config.yml, opened in a headless
Chromium that can reach no network, shows MathJax's output and no raw TeX delimiters."""
import html.parser
import os
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..")

PAGE = r"""# Math offline

Inline $\alpha + \mathbb{E}_{x \sim \mu}[\lVert x \rVert]$ and a labelled display:

$$
\boldsymbol{v}_\theta(t, x) = \tfrac{1}{2} \int_0^1 x \, \mathrm{d}x
$$ (eq-offline)

\begin{align}
a &= b + c \\
d &= \operatorname{clip}(e)
\end{align}

See {eq}`eq-offline`.
"""


def chromium():
    found = next((p for p in map(shutil.which, ["chromium", "chromium-browser", "google-chrome"]) if p), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI has no chromium: .ci/run installs the Debian package")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return found


def jupyter_book():
    beside = os.path.join(os.path.dirname(sys.executable), "jupyter-book")
    return beside if os.path.exists(beside) else shutil.which("jupyter-book")


class Text(html.parser.HTMLParser):
    """The text a reader sees: everything outside <script> and <style>."""

    def __init__(self):
        super().__init__()
        self.skip, self.parts = 0, []

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style") and self.skip > 0

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def build_page(tmp_path):
    """One markdown page built by jupyter-book with the book's _config.yml; only what needs the whole book changes."""
    with open(os.path.join(ROOT, "_config.yml")) as f:
        config = yaml.safe_load(f)
    config["execute"] = {"execute_notebooks": "off"}
    config.pop("exclude_patterns", None)
    config["bibtex_bibfiles"] = [os.path.abspath(os.path.join(ROOT, p)) for p in config.get("bibtex_bibfiles", [])]
    src = tmp_path / "src"
    src.mkdir()
    (src / "_config.yml").write_text(yaml.safe_dump(config))
    (src / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    (src / "index.md").write_text(PAGE)
    out = subprocess.run([jupyter_book(), "build", str(src), "-W", "-n", "--keep-going"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return src / "_build" / "html" / "index.html"


def test_math_is_typeset_without_network(tmp_path):
    browser = chromium()
    page = build_page(tmp_path)
    # No proxy answers and no host name resolves: only file:// loads, as for a reader offline.
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
                          "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=15000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert "<body" in dom, "chromium printed no page"
    text = Text()
    text.feed(dom)
    shown = "".join(text.parts)
    typeset = dom.count("<mjx-container")
    assert typeset >= 3, f"MathJax typeset {typeset} of the page's 3 formulas: does _config.yml load it from a CDN?"
    assert "<mjx-merror" not in dom, "MathJax could not typeset a formula (a missing extension file?)"
    for raw in (r"\(", r"\[", r"\begin{align}", r"\alpha"):
        assert raw not in shown, f"raw TeX {raw!r} left in the page's text"
