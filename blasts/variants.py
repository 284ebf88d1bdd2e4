"""Message variants: what each recipient is sent, the split of a blast's recipients between them, and
the test that sends the rest the winner.

Variants (A to E) test which message works: a blast's recipients are split between them at random,
evenly and reproducibly (the blast's id seeds the draw) before anything is sent, and the blast's page
compares their funnels with honest intervals (reporting/variants.py). With a VariantTest, only its
share is split at first; the rest are held (QUEUED, next attempt HELD) until the worker decides
(sending/winner.py). Varied wording ({Salam|Hi}) is recipients.spin's, for variety, not testing.
"""

import random
from datetime import UTC, datetime

from django.core.exceptions import ValidationError

from .models import VARIANT_LETTERS
from .recipients import message_render, spin

MAX_VARIANTS = len(VARIANT_LETTERS)
HELD = datetime(9999, 12, 31, tzinfo=UTC)  # a held recipient's next attempt: when the test decides


def recipient_message(recipient) -> str:
    """The text one recipient is sent (before its links are made trackable): its variant's message,
    its wording, its placeholders filled in."""
    blast = recipient.blast
    template = blast.messages.get(recipient.variant or "A", blast.message)
    return message_render(spin(template, recipient.phone), recipient)


def variants_assign(seed: int, phones: list[str], letters: str, share: int | None = None) -> dict[str, str]:
    """Each phone's variant: a shuffle seeded by `seed` (the blast), then dealt in turn, so the split
    is even (shares differ by at most one) and the same phones and seed always give the same split.
    With `share` (percent), only that many are dealt a variant; the rest get "" (held for the winner),
    and the same call without it deals them on, as an even split of the rest would."""
    order = sorted(phones)
    random.Random(f"variants:{seed}").shuffle(order)
    dealt = len(order) if share is None else max(len(letters), round(len(order) * share / 100))
    return {
        phone: letters[index % len(letters)] if index < dealt else "" for index, phone in enumerate(order)
    }


TEST_SHARES = (10, 50)  # the least and most of the recipients a test may take, in percent


def variant_test_check(variants: list[str], test) -> None:
    """ValidationError unless `test` (a VariantTest, or None) is one the blast can run."""
    if test is None:
        return
    if not variants:
        raise ValidationError({"test_share": "Testing first needs at least two variants: give variant B."})
    low, high = TEST_SHARES
    if not low <= test.share <= high:
        raise ValidationError({"test_share": f"Test on {low}% to {high}% of the recipients."})
    if test.wait.total_seconds() <= 0:
        raise ValidationError({"test_hours": "Wait some time after the test for its replies and clicks."})


def variants_check(variants: list[str]) -> list[str]:
    """Variants B to E as given (blank ones dropped), or ValidationError: at most four beside A."""
    given = [text for text in variants if text.strip()]
    if len(given) > MAX_VARIANTS - 1:
        raise ValidationError(
            {
                "variants": f"At most {MAX_VARIANTS} variants in all: the message (A) and {MAX_VARIANTS - 1} more."
            }
        )
    return given
