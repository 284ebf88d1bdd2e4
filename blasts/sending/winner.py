"""Test then send the winner: the worker's decision for a blast testing its variants (variants.py
holds the rest back until it is made). The state is the VariantTest row, so a restart loses nothing."""

from datetime import datetime

from django.db import transaction

from ..audit import SYSTEM, Did, audit_record
from ..models import BlastRecipient, VariantTest
from ..reporting.stats import Difference
from ..reporting.variants import blast_variants
from ..statuses import ACTIVE
from ..templatetags.blasts_extras import interval, percent
from ..variants import HELD, variants_assign

Status = BlastRecipient.Status


def variant_tests_decide(*, now: datetime) -> int:
    """For each active blast testing its variants: once the test's sends are done, start the wait; once
    the wait is over, give the held recipients the winner, or an even split, and say why. Returns how
    many tests were decided. Any sender may run it: the test's row is locked while it decides."""
    decided = 0
    for pk in VariantTest.objects.filter(decided_at__isnull=True, blast__state__in=ACTIVE).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            test = (
                VariantTest.objects.select_for_update(skip_locked=True)
                .filter(pk=pk, decided_at__isnull=True)
                .first()
            )
            if test is None:
                continue
            tested = BlastRecipient.objects.filter(blast_id=pk).exclude(variant="")
            if test.ends_at is None:
                if not tested.filter(status__in=[Status.QUEUED, Status.SENDING]).exists():
                    test.ends_at = now + test.wait
                    test.save(update_fields=["ends_at"])
            elif test.ends_at <= now:
                _decide(test, now)
                decided += 1
    return decided


def _decide(test: VariantTest, now: datetime) -> None:
    blast = test.blast
    results = blast_variants(blast)  # the held have no variant yet: these are the test's alone
    rates = {result.letter: result.rate(test.metric) for result in results}
    best = max(rates, key=lambda letter: rates[letter].value or 0.0)
    beaten = [Difference(rates[letter], rates[best]) for letter in rates if letter != best]
    what = test.get_metric_display().lower()
    shown = "; ".join(
        f"{letter} {percent(rate.value)} of {rate.trials} sent, 95% interval {interval(rate.interval)}"
        for letter, rate in rates.items()
    )
    held = BlastRecipient.objects.filter(blast=blast, variant="", status=Status.QUEUED, next_attempt_at=HELD)
    if all(not difference.noise for difference in beaten):
        test.winner = best
        test.verdict = (
            f"{best} won: its {what} was higher than every other variant's beyond noise ({shown}). "
            f"The other {held.count()} recipients get {best}."
        )
        held.update(variant=best, next_attempt_at=None)
    else:
        test.verdict = (
            f"Inconclusive: no variant's {what} was higher than the others' beyond noise ({shown}). "
            f"The other {held.count()} recipients are split evenly."
        )
        split = variants_assign(
            blast.pk, list(blast.recipients.values_list("phone", flat=True)), "".join(blast.messages)
        )
        for letter in blast.messages:
            held.filter(phone__in=[phone for phone, dealt in split.items() if dealt == letter]).update(
                variant=letter, next_attempt_at=None
            )
    test.decided_at = now
    test.save(update_fields=["winner", "verdict", "decided_at"])
    audit_record(SYSTEM, Did.TEST_DECIDED, blast=blast, verdict=test.verdict)
