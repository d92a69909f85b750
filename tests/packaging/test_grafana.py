"""The Grafana dashboard in packaging/grafana: valid, and every metric it queries exists.

A dashboard querying a metric the server does not serve shows an empty panel and nobody
notices; one that leaves out a metric hides it. So the names in its queries are checked
against a real server's exposition, both ways.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from geartrain.client import AsyncClient
from geartrain.server.metrics import exposition
from geartrain.server.persistence import open_store
from tests.packaging.helpers import ROOT
from tests.server.conftest import running_server

DASHBOARD = ROOT / "packaging" / "grafana" / "geartrain.json"
METRIC_NAME = re.compile(r"\b(?:gearman|geartrain)_[a-z_]+\b")


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def test_every_panel_has_an_id_a_place_and_queries_on_the_chosen_data_source() -> None:
    dashboard = load()
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in panels:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert 'instance=~"$instance"' in target["expr"], panel["title"]


async def test_the_dashboard_queries_every_geartrain_metric_and_only_real_ones(
    tmp_path: Path,
) -> None:
    # A server with a persistent queue and a function, so that every family has samples.
    async with running_server(open_store(f"sqlite:///{tmp_path}/q.sqlite3")) as server:
        async with AsyncClient([f"127.0.0.1:{server.port}"], timeout=10) as client:
            await client.submit_background("f", "x")
        body, _ = exposition(server)
    family_of = {
        sample.name: family.name
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }
    queried = {name for expr in queries(load()) for name in METRIC_NAME.findall(expr)}
    assert queried - set(family_of) == set()
    served = {family for family in family_of.values() if family.startswith("geartrain_")}
    assert served - {family_of[name] for name in queried} == set()
