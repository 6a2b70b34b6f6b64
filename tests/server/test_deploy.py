"""docker-compose.yml cannot run here (no Docker engine); check it stays consistent instead."""

from __future__ import annotations

import yaml

from tests.support.live import ROOT


def test_compose_runs_two_nodes_behind_nginx_on_shared_redis_and_postgres() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"redis", "postgres", "migrate", "tandem1", "tandem2", "nginx"} <= set(services)
    nodes = [services["tandem1"], services["tandem2"]]
    for node in nodes:
        env = node["environment"]
        assert env["TANDEM_BROKER_URL"].startswith("redis://redis:")
        assert env["TANDEM_DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert env["TANDEM_ENV"] == "production"
        assert node["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "--no-migrate" in node["command"]
    assert nodes[0]["environment"]["TANDEM_NODE_ID"] != nodes[1]["environment"]["TANDEM_NODE_ID"]
    assert "tandem migrate" in services["migrate"]["command"]
    assert "--appendonly" in services["redis"]["command"]
    nginx = services["nginx"]
    template = nginx["volumes"][0].split(":")[0]
    assert (ROOT / template).is_file()
    upstreams = nginx["environment"]["TANDEM_UPSTREAM_SERVERS"]
    assert "tandem1:8000" in upstreams and "tandem2:8000" in upstreams
