"""A gateway per database backend for the team and user tests: each runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import MASTER_KEY, Process, gateway_config, start_gateway


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_gateway(request: pytest.FixtureRequest, simulator: Process,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    config = gateway_config(simulator.url)
    if request.param == "postgres":
        config["general_settings"]["database_url"] = request.getfixturevalue("postgres_url")
    process = start_gateway(tmp_path_factory.mktemp(f"owners-{request.param}"), config)
    yield process
    process.stop()


@pytest.fixture
def master(db_gateway: Process) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=db_gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"},
                      timeout=30) as client:
        yield client


def call(client: httpx.Client, method: str, path: str, **kwargs: object) -> dict:
    """An administration call that must succeed; its JSON body."""
    response = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return response.json()
