"""docs/embedding.md's example runs as documented: a job goes through an embedded server."""

from __future__ import annotations

import importlib.util
import signal
from pathlib import Path
from types import ModuleType

EXAMPLE = Path(__file__).parents[2] / "examples" / "embedded.py"
DOC = Path(__file__).parents[2] / "docs" / "embedding.md"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("embedded_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_example_runs_a_job_through_an_embedded_server() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    result = await _load_example().main()
    assert result == b"dlrow ,olleh"
    # The application's signal handlers were never touched.
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_the_doc_shows_the_example_file_as_it_is() -> None:
    assert EXAMPLE.read_text() in DOC.read_text()
