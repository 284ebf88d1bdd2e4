"""The failure-streak breaker: a run of failed sends of one kind pauses the blast and says why.

The other breaker, on delivery of the sends that did go out, is health.py.
"""

from contextlib import suppress

from django.db.models import Case, F, Value, When

from ..gateway.client import FailureKind, SendResult
from ..lifecycle import BlastStateError, blast_pause
from ..models import Blast, BlastRecipient, StatusHistory

Status = BlastRecipient.Status
Source = StatusHistory.Source


# Consecutive failed sends of one kind that pause a blast; other kinds never do.
BREAKER_THRESHOLDS = {
    FailureKind.UNAUTHORIZED: 3,
    FailureKind.DEVICE_OFFLINE: 3,
    FailureKind.UNAVAILABLE: 10,
    FailureKind.TIMEOUT: 5,
    FailureKind.BAD_ANSWER: 5,
}


def blast_count_send(*, blast: Blast, result: SendResult) -> None:
    """The circuit breaker: N failed sends in a row of the same kind pause the blast."""
    threshold = BREAKER_THRESHOLDS.get(result.kind)
    if threshold is None:
        if blast.failure_streak:
            Blast.objects.filter(pk=blast.pk).update(failure_streak=0, failure_kind="")
        return
    Blast.objects.filter(pk=blast.pk).update(
        failure_streak=Case(When(failure_kind=result.kind, then=F("failure_streak") + 1), default=Value(1)),
        failure_kind=result.kind,
    )
    streak = Blast.objects.values_list("failure_streak", flat=True).get(pk=blast.pk)
    if streak >= threshold:
        with suppress(BlastStateError):  # paused already (by a person, or another sender's breaker)
            blast_pause(
                blast=blast, reason=f"{streak} sends in a row failed: {result.reason}. Fix it, then resume."
            )
