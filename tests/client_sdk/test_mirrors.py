"""The SDK mirrors the server's vocabularies and snapshots (it cannot import them: it stands
alone); compared here, so a change on one side fails until the other follows."""

from __future__ import annotations

import dataclasses
import typing
from datetime import UTC, datetime

import client_sdk
from client_sdk import _docs_api, _status
from domain import documents, flight, flight_fields, jobs
from realtime.presence import REPORTED_STATUSES

NOW = datetime(2026, 12, 6, 9, tzinfo=UTC)


def test_statuses_roles_and_formats_are_the_servers() -> None:
    assert {s.value for s in client_sdk.JobStatus} == {s.value for s in jobs.JobStatus}
    assert {s.value for s in client_sdk.FlightStatus} == {
        s.value for s in flight_fields.FlightStatus
    }
    assert set(typing.get_args(_docs_api.DocRole)) == {r.value for r in documents.Role}
    assert set(typing.get_args(_docs_api.DocFormat)) == {f.value for f in documents.DocFormat}
    assert set(typing.get_args(_status.Status)) == set(REPORTED_STATUSES)


def test_a_job_snapshot_has_exactly_the_sdk_jobs_fields() -> None:
    job = jobs.Job.create("j1", owner="alice", kind="checkout", now=NOW)
    failed = job.fail(jobs.JobError(code="declined", message="card declined"), now=NOW)
    for snapshot in (job.snapshot(), failed.snapshot()):
        fields = {f.name for f in dataclasses.fields(client_sdk.Job)}
        assert set(snapshot) == fields
        parsed = client_sdk.Job.from_snapshot(snapshot)
        assert parsed.version == snapshot["version"] and parsed.status == snapshot["status"]
    assert client_sdk.Job.from_snapshot(failed.snapshot()).error == client_sdk.JobErrorInfo(
        code="declined", message="card declined"
    )


def test_a_flight_snapshot_has_exactly_the_sdk_flights_fields() -> None:
    fields = {
        "number": "TD1",
        "date": "2026-12-06",
        "origin": "AMS",
        "destination": "LHR",
        "gate": "D7",
        "position": {"lat": 52.3, "lon": 4.7},
    }
    record = flight.Flight.create("td1", fields, provider_ts=NOW, now=NOW)
    snapshot = record.snapshot()
    assert set(snapshot) == {f.name for f in dataclasses.fields(client_sdk.Flight)}
    assert set(snapshot["position"]) == {
        f.name for f in dataclasses.fields(client_sdk.AircraftPosition)
    }
    parsed = client_sdk.Flight.from_snapshot(snapshot)
    assert (parsed.gate, parsed.version, parsed.origin) == ("D7", 1, "AMS")
