"""Comparisons: two funnels side by side with honest intervals, and a blast's follow-up sequence."""

from collections import defaultdict
from dataclasses import dataclass

from ..models import Blast, BlastRecipient
from .funnels import Funnel, audience, blast_funnel, blast_funnels, blasts_funnel_total
from .stats import Difference, verdict
from .timing import StageTiming, blast_timings

Status = BlastRecipient.Status


COMPARED_STAGES = ("received", "read", "replied", "closed")


def funnels_compare(a: Funnel, b: Funnel) -> list[dict]:
    """Each stage's rate of sent on both sides with 95% intervals, and whether b - a is beyond noise."""
    return [
        {
            "stage": stage,
            "a": a.rate(stage),
            "b": b.rate(stage),
            "difference": (difference := Difference(a.rate(stage), b.rate(stage))),
            "verdict": verdict(difference, "The first", "The second"),
        }
        for stage in COMPARED_STAGES
    ]


COMPARABLE = {"blast": "Blast", "tag": "Tag", "stage": "Follow-up stage"}


def comparable_funnel(key: str) -> tuple[str, Funnel]:
    """("Tag: Promo", its funnel) for "tag:Promo"; also "blast:12" and "stage:Follow-up 1".

    Raises ValueError for a key that names nothing."""
    kind, _, value = key.partition(":")
    if (
        kind == "blast"
        and value.isascii()
        and value.isdigit()
        and (blast := Blast.objects.filter(pk=value).first())
    ):
        return (
            f"{blast.tag} ({blast.follow_up_stage}, {blast.created_at:%Y-%m-%d}) #{blast.pk}",
            blast_funnel(blast.pk),
        )
    field = {"tag": "tag", "stage": "follow_up_stage"}.get(kind)
    if field and value and (blasts := Blast.objects.filter(**{field: value})).exists():
        return f"{COMPARABLE[kind]}: {value}", blasts_funnel_total(blasts)
    raise ValueError(f"{key!r} is not a blast, tag or follow-up stage here.")


def comparable_choices(recent_blasts: int = 100) -> list[tuple[str, list[tuple[str, str]]]]:
    """What the compare page offers: tags, follow-up stages and the most recent blasts, grouped."""
    values = Blast.objects.order_by()
    tags = values.values_list("tag", flat=True).distinct().order_by("tag")
    stages = values.values_list("follow_up_stage", flat=True).distinct().order_by("follow_up_stage")
    blasts = Blast.objects.order_by("-created_at", "-id")[:recent_blasts]
    return [
        ("Tags", [(f"tag:{tag}", tag) for tag in tags]),
        ("Follow-up stages", [(f"stage:{stage}", stage) for stage in stages]),
        (
            "Blasts",
            [
                (f"blast:{b.pk}", f"#{b.pk} {b.tag} ({b.follow_up_stage}, {b.created_at:%Y-%m-%d})")
                for b in blasts
            ],
        ),
    ]


@dataclass(frozen=True)
class SequenceStep:
    stage: str
    blasts: list[Blast]
    funnel: Funnel  # this step's own recipients
    replied_so_far: int  # people of the first blast who replied to it or to any step up to this one
    closed_so_far: int
    timings: list[StageTiming]


def blast_sequence(blast: Blast) -> tuple[Blast, int, list[SequenceStep]]:
    """The blast's family from its first blast down: Initial → Follow-up 1 → Follow-up 2 …

    Returns the first blast, how many of its recipients were sent the message (the base of the
    cumulative rates), and one step per generation of follow-ups (siblings share a step).
    """
    root = blast
    while root.parent_id:
        root = Blast.objects.get(pk=root.parent_id)
    generations = [[root]]
    while children := list(Blast.objects.filter(parent__in=generations[-1]).order_by("created_at", "id")):
        generations.append(children)
    ids = [b.pk for generation in generations for b in generation]
    rows = defaultdict(list)
    for blast_id, phone, status in audience(blast_id__in=ids).values_list("blast_id", "phone", "status"):
        rows[blast_id].append((phone, status))
    funnels = blast_funnels(ids)
    replied, closed, steps = set(), set(), []
    for generation in generations:
        for b in generation:
            replied.update(phone for phone, status in rows[b.pk] if status >= Status.REPLIED)
            closed.update(phone for phone, status in rows[b.pk] if status >= Status.CLOSED)
        counts = defaultdict(int)
        for b in generation:
            for status, n in funnels[b.pk].by_status.items():
                counts[status] += n
        steps.append(
            SequenceStep(
                stage=" / ".join(dict.fromkeys(b.follow_up_stage for b in generation)),
                blasts=generation,
                funnel=Funnel(dict(counts)),
                replied_so_far=len(replied),
                closed_so_far=len(closed),
                timings=blast_timings(b.pk for b in generation),
            )
        )
    return root, funnels[root.pk].sent, steps
