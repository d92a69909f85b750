"""mkdocs hooks for the documentation site (named in mkdocs.yml).

The docstrings name other objects with Sphinx roles (``:class:`Client```), which
mkdocstrings shows as they are written; the API pages drop the role and keep the name as code.

The benchmark's own description lives next to its code, in ``bench/README.md``. The site
publishes it as the page ``bench.md``, and the links the pages under ``docs/`` make to it
(``../bench/README.md``, which is right when the files are read in the repository) are
pointed at that page, so ``mkdocs build --strict`` checks them like any other link.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
BENCH_README = ROOT / "bench" / "README.md"
BENCH_PAGE = "bench.md"
_BENCH_LINK = re.compile(r"\]\((?:\.\./)+bench/README\.md(#[^)]*)?\)")
_ROLE = re.compile(r":(?:attr|class|data|exc|func|meth|mod|obj):(?=<code>)")


def on_files(files: Files, config: Any, **_: Any) -> Files:
    """Add bench/README.md to the site as bench.md."""
    files.append(
        File.generated(config, BENCH_PAGE, content=BENCH_README.read_text(encoding="utf-8"))
    )
    return files


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """Point links to ../bench/README.md at the generated page."""
    depth = page.file.src_uri.count("/")
    target = "../" * depth + BENCH_PAGE
    return _BENCH_LINK.sub(lambda m: f"]({target}{m.group(1) or ''})", markdown)


def on_page_content(html: str, page: Any, **_: Any) -> str:
    """Drop the Sphinx role in front of a name the docstrings mark up as code."""
    return _ROLE.sub("", html)
