"""The documentation: the site builds without a warning, and the README opens as it should.

The site (mkdocs.yml, docs/) is built with ``mkdocs build --strict``, so a broken link or
anchor, a page left out of the navigation or a docstring mkdocstrings cannot read fails here
rather than on the day someone publishes the site.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A public class of each module the API reference documents, and the page it must be on.
API_NAMES = {
    "client": ["Client", "AsyncClient", "SyncTask", "TaskState"],
    "worker": ["Worker", "AsyncWorker", "Job", "WorkFail"],
    "admin": ["AdminClient", "AsyncAdminClient", "FunctionStatus"],
    "server": ["Settings", "Server"],
}


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documentation site, built once with ``mkdocs build --strict``."""
    missing = [
        name
        for name in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
        if importlib.util.find_spec(name.split(".")[0]) is None
        or importlib.util.find_spec(name) is None
    ]
    if missing:
        reason = f"{', '.join(missing)} not installed: pip install -e '.[dev]'"
        if _ci():
            pytest.fail(f"CI is set, so the documentation must build: {reason}")
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("site")
    config = str(ROOT / "mkdocs.yml")
    command = ["mkdocs", "build", "--strict", "--quiet", "--config-file", config]
    result = subprocess.run(
        [sys.executable, "-m", *command, "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    return out


def test_the_site_builds_strict_with_every_page(site: Path) -> None:
    assert (site / "index.html").is_file()
    pages = sorted(p.relative_to(ROOT / "docs") for p in (ROOT / "docs").rglob("*.md"))
    assert pages
    for page in pages:
        html = site / page.with_suffix("") / "index.html"
        if page.name == "index.md":
            html = site / page.parent / "index.html"
        assert html.is_file(), f"docs/{page} was not built"
    # bench/README.md is published as the benchmark page.
    assert "The load generator" in (site / "bench" / "index.html").read_text()


@pytest.mark.parametrize("module", sorted(API_NAMES))
def test_the_api_reference_documents_the_public_classes(site: Path, module: str) -> None:
    html = (site / "api" / module / "index.html").read_text()
    for name in API_NAMES[module]:
        assert re.search(rf'id="geartrain\.[a-z.]*\b{name}"', html), f"{name} not on api/{module}"


def test_the_readme_opens_with_what_it_is_then_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("# geartrain\n\ngeartrain is a ")
    intro, _, rest = text.partition("```sh\n")
    assert intro.count("\n\n") == 2, "one paragraph between the title and the commands"
    assert rest.startswith("scripts/serve ")
    assert rest.split("\n")[1].startswith("scripts/test ")
    for command in (
        "gearman -w -f reverse -- rev",
        "gearman -f reverse 'hello'",
        "gearadmin --status",
    ):
        assert command in text
