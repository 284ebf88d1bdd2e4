"""Honest comparisons: a rate comes with its 95% interval, a difference says when it is noise.

Wilson's score interval for one proportion, and Newcombe's hybrid score interval (his method 10,
1998) for the difference of two independent proportions. Both behave at small counts and at 0% or
100%, where the textbook p ± 1.96·SE interval collapses to nothing.
"""

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """The 95% score interval of successes / trials; (0, 1) when there are no trials."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Rate:
    successes: int
    trials: int

    @property
    def value(self) -> float | None:
        return self.successes / self.trials if self.trials else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.successes, self.trials)


@dataclass(frozen=True)
class Difference:
    """b - a, with its 95% interval; `noise` when the interval holds zero (or there is no data)."""

    a: Rate
    b: Rate

    @property
    def value(self) -> float | None:
        if not (self.a.trials and self.b.trials):
            return None
        return self.b.value - self.a.value

    @property
    def interval(self) -> tuple[float, float] | None:
        if self.value is None:
            return None
        (a_low, a_high), (b_low, b_high) = self.a.interval, self.b.interval
        a, b = self.a.value, self.b.value
        low = self.value - math.sqrt((b - b_low) ** 2 + (a_high - a) ** 2)
        high = self.value + math.sqrt((b_high - b) ** 2 + (a - a_low) ** 2)
        return low, high

    @property
    def noise(self) -> bool:
        interval = self.interval
        return interval is None or interval[0] <= 0 <= interval[1]


def verdict(difference: Difference, a: str, b: str) -> str:
    """The plain words for b - a: nothing to say yet, within noise, or which is higher beyond it."""
    if difference.value is None:
        return "Nothing sent on one side yet."
    if difference.noise:
        return "Within noise: these numbers do not show a real difference."
    return f"{b if difference.value > 0 else a} is higher, beyond noise."
