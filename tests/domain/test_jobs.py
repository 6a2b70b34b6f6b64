"""The job state machine: any sequence of commands keeps the invariants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from domain.errors import Conflict, InvalidPayload
from domain.jobs import Job, JobError, JobStatus, job_event

T0 = datetime(2026, 11, 23, tzinfo=UTC)


class JobMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.job = Job.create("j1", owner="alice", kind="payment", now=T0)
        self.history: list[Job] = [self.job]
        self.tick = 0

    def now(self) -> datetime:
        self.tick += 1
        return T0 + timedelta(seconds=self.tick)

    def apply(self, change: object, *, refused_because: str | None = None) -> None:
        """Apply ``change``; it must be refused exactly when the model says why it should
        (a finished job, progress out of range or going back), and accepted otherwise."""
        before = self.job
        if before.status.terminal:
            refused_because = refused_because or "the job is finished"
        try:
            after = change(before)  # type: ignore[operator]
        except (Conflict, InvalidPayload) as exc:
            assert refused_because is not None, f"refused for no reason: {exc}"
            assert self.job is before
            return
        assert refused_because is None, f"accepted although {refused_because}"
        assert after.version == before.version + 1
        assert after.updated_at > before.updated_at
        self.job = after
        self.history.append(after)

    @rule(progress=st.integers(-20, 130), stage=st.none() | st.text(max_size=5))
    def report(self, progress: int, stage: str | None) -> None:
        why = None
        if not 0 <= progress <= 100:
            why = "the progress is out of range"
        elif progress < self.job.progress:
            why = "the progress goes back"
        self.apply(
            lambda job: job.with_progress(progress, stage=stage, message=None, now=self.now()),
            refused_because=why,
        )

    @rule(result=st.none() | st.dictionaries(st.text(max_size=3), st.integers()))
    def complete(self, result: object) -> None:
        self.apply(lambda job: job.complete(result, now=self.now()))

    @rule(message=st.text(max_size=10))
    def fail(self, message: str) -> None:
        self.apply(lambda job: job.fail(JobError("declined", message), now=self.now()))

    @rule()
    def cancel(self) -> None:
        self.apply(lambda job: job.cancel(now=self.now()))

    @invariant()
    def progress_never_goes_back_and_stays_in_range(self) -> None:
        progresses = [job.progress for job in self.history]
        assert progresses == sorted(progresses)
        assert all(0 <= p <= 100 for p in progresses)

    @invariant()
    def versions_count_the_changes(self) -> None:
        assert [job.version for job in self.history] == list(range(1, len(self.history) + 1))

    @invariant()
    def terminal_is_last(self) -> None:
        assert not any(job.status.terminal for job in self.history[:-1])
        if self.job.status is JobStatus.COMPLETED:
            assert self.job.progress == 100


TestJobMachine = JobMachine.TestCase


def test_backwards_progress_and_changes_after_the_end_are_conflicts() -> None:
    job = Job.create("j", owner="a", kind="k", now=T0).with_progress(
        50, stage="charging", message=None, now=T0
    )
    with pytest.raises(Conflict, match="back"):
        job.with_progress(40, stage=None, message=None, now=T0)
    done = job.complete({"receipt": "r1"}, now=T0)
    for change in (
        lambda: done.with_progress(100, stage=None, message=None, now=T0),
        lambda: done.fail(JobError("x", "y"), now=T0),
        lambda: done.cancel(now=T0),
        lambda: done.complete(None, now=T0),
    ):
        with pytest.raises(Conflict):
            change()


def test_snapshot_and_events() -> None:
    job = Job.create("42", owner="alice", kind="checkout", now=T0)
    job = job.with_progress(30, stage="charging", message="Charging card", now=T0)
    snapshot = job.snapshot()
    assert snapshot["status"] == "processing" and snapshot["version"] == 2
    assert snapshot["stage"] == "charging" and snapshot["error"] is None
    event = job_event("progress", job)
    assert event.type == "job.progress" and event.data == snapshot
    assert event.topics == (("job", "42"), ("user", "alice"))
