"""A blast's variants side by side: each one's funnel, reply and click rates with 95% intervals, and
whether each differs from A beyond noise (the verdict Compare uses)."""

from dataclasses import dataclass

from ..models import Blast, BlastRecipient, VariantTest
from ..variants import HELD
from .clicks import Clicks, blast_clicks
from .funnels import Funnel, blast_variant_funnels
from .stats import Difference, Rate, verdict

RATES = ("replied", "clicked")  # what a variant is judged on


@dataclass(frozen=True)
class VariantResult:
    letter: str
    message: str
    funnel: Funnel
    clicks: Clicks
    against_a: list[tuple[str, Difference, str]]  # per rate in RATES: this variant's minus A's, in words

    def rate(self, name: str) -> Rate:
        return self.funnel.rate("replied") if name == "replied" else self.clicks.rate

    def metrics(self) -> dict:
        """The API's shape (serializers.VariantMetricsSerializer)."""

        def rate(rate: Rate) -> dict:
            low, high = rate.interval
            return {"value": rate.value, "low": low, "high": high}

        def against(difference: Difference, words: str) -> dict:
            low, high = difference.interval or (None, None)
            return {
                "difference": difference.value,
                "low": low,
                "high": high,
                "beyond_noise": not difference.noise,
                "verdict": words,
            }

        return {
            "variant": self.letter,
            "message": self.message,
            **self.funnel.stages(),
            "clicked": self.clicks.clicked,
            "reply_rate": rate(self.rate("replied")),
            "click_rate": rate(self.rate("clicked")),
            "against_a": {name: against(difference, words) for name, difference, words in self.against_a},
        }


@dataclass(frozen=True)
class TestState:
    """A blast's test-then-send-the-winner, and how many recipients it still holds back."""

    test: VariantTest
    held: int
    tested: int


def blast_variant_test(blast: Blast) -> TestState | None:
    test = VariantTest.objects.filter(pk=blast.pk).first()
    if test is None:
        return None
    recipients = BlastRecipient.objects.filter(blast_id=blast.pk)
    held = recipients.filter(variant="", status=BlastRecipient.Status.QUEUED, next_attempt_at=HELD).count()
    return TestState(test, held, recipients.count() - held if test.decided_at is None else 0)


def blast_variants(blast: Blast) -> list[VariantResult]:
    """Each of the blast's variants, A first (none for a blast without variants)."""
    if not blast.variants:
        return []
    messages = blast.messages
    funnels = blast_variant_funnels(blast.pk, messages)
    clicks = blast_clicks(blast.pk, by_variant=True)
    results = []
    for letter, message in messages.items():
        result = VariantResult(letter, message, funnels[letter], clicks[letter], [])
        if results:
            for name in RATES:
                difference = Difference(results[0].rate(name), result.rate(name))
                result.against_a.append((name, difference, verdict(difference, "A", letter)))
        results.append(result)
    return results
