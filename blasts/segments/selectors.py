"""Named reads for the segment pages and the API: live counts, a sample of members, what to type."""

from django.db.models import Count, IntegerField, Prefetch, QuerySet, Value

from ..models import Contact, ContactTag, Segment
from ..selectors import blast_filter_choices
from .rules import segment_members

SAMPLE_SIZE = 20
FEW = 2000  # members up to this many are sampled by reading them all (see segment_sample)
CHOICES_MAX = 500  # suggestions in a datalist: enough to type from, small enough to send every time


def segments_listed() -> QuerySet:
    """Segments by name, each with how many blasts were made from it (`blast_count`)."""
    return (
        Segment.objects.annotate(blast_count=Count("blasts"))
        .select_related("created_by")
        .order_by("name", "id")
    )


def segment_count(segment: Segment) -> int:
    """How many contacts the segment has now (opted-out numbers never among them): one query."""
    return segment_members(segment.match, segment.rules).count()


def segments_counts(segments) -> dict[int, int]:
    """Each segment's live count, in one query however many segments (each count planned on its own)."""
    counts = [
        segment_members(segment.match, segment.rules)
        .order_by()
        .annotate(segment=Value(segment.pk, output_field=IntegerField()))
        .values("segment")
        .annotate(n=Count("pk"))
        .values_list("segment", "n")
        for segment in segments
    ]
    if not counts:
        return {}
    return dict(counts[0].union(*counts[1:], all=True))


def members_with_tags(members: QuerySet) -> QuerySet:
    """Contacts with their tags' names fetched in one more query, not one per contact."""
    return members.prefetch_related(Prefetch("tags", queryset=ContactTag.objects.only("name")))


def segment_sample(match: str, rules: list[dict], count: int, size: int = SAMPLE_SIZE) -> list[Contact]:
    """The `size` members seen most recently, with their tags; `count` is how many members there are.

    A few members are all read and the latest picked here: asked for "the latest 20" PostgreSQL
    would walk every contact newest first looking for them. Many are found near the newest."""
    if not count:
        return []
    members = segment_members(match, rules)
    if count <= FEW:
        latest = sorted(members.order_by().values_list("last_seen_at", "pk"), reverse=True)[:size]
        members = Contact.objects.filter(pk__in=[pk for _, pk in latest])
    return list(members_with_tags(members.order_by("-last_seen_at", "-id"))[:size])


def rule_choices() -> dict[str, list[str]]:
    """What the rule builder suggests while typing: the blasts' tags and follow-up stages, the contacts'
    tags, and the attribute keys of the most recently seen contacts."""
    keys: set[str] = set()
    recent = Contact.objects.order_by("-last_seen_at", "-id").exclude(attributes={})
    for attributes in recent.values_list("attributes", flat=True)[:CHOICES_MAX]:
        keys.update(attributes if isinstance(attributes, dict) else ())
    return {
        **blast_filter_choices(),
        "contact_tags": list(ContactTag.objects.values_list("name", flat=True)[:CHOICES_MAX]),
        "attribute_keys": sorted(keys)[:CHOICES_MAX],
    }
