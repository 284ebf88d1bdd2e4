import re

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from .gateway.client import MESSAGE_ID_MAX_LENGTH

# {name}, or {name|fallback}: the fallback goes out where the recipient has no name. Besides these
# three, a placeholder names a contact attribute ({city|your area}); contacts/book.py checks that
# some recipient has it.
PLACEHOLDER = re.compile(r"\{(\w+)(?:\|([^{}|]*))?\}")
PLACEHOLDERS = ("name", "first_name", "phone")
VARIANT_LETTERS = "ABCDE"  # a blast has one message (A) or two to five variants


class Blast(models.Model):
    """One message sent to a list of recipients through one WSAPME device."""

    class State(models.TextChoices):
        DRAFT = "draft", "Draft"
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        PAUSED = "paused", "Paused"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    tag = models.CharField(max_length=100, help_text="Campaign name, e.g. 'Product Launch'.")
    follow_up_stage = models.CharField(
        max_length=50, default="Initial", help_text="'Initial', 'Follow-up 1', ..."
    )
    message = models.TextField(
        help_text=(
            "Personalise with {name}, {first_name}, {phone} or a contact attribute such as {city}; "
            "{first_name|Tuan/Puan} says Tuan/Puan to recipients without a name."
        ),
    )
    device = models.CharField(max_length=32, help_text="WSAPME device id that sends the blast.")
    scheduled_at = models.DateTimeField(null=True, blank=True, help_text="Send no earlier than this.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.DRAFT)
    state_reason = models.CharField(
        max_length=255, blank=True, help_text="Why the blast is paused or cancelled."
    )
    variants = models.JSONField(
        default=list,
        blank=True,
        help_text="The messages of variants B to E (A's is `message`): recipients are split between them.",
    )
    track_links = models.BooleanField(
        default=True,
        help_text="Each http(s) link becomes a short link of this site per recipient that counts clicks.",
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="follow_ups"
    )
    segment = models.ForeignKey(
        "Segment",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="blasts",
        help_text="The segment whose members were the recipients when the blast was made.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Circuit breaker: the kind of the current run of failed sends and its length.
    failure_kind = models.CharField(max_length=20, blank=True)
    failure_streak = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [  # what each role may do: access.py
            ("send_blast", "Can send, pause, resume and cancel blasts"),
            ("export_recipients", "Can export recipients' phone numbers"),
            ("resolve_unknown", "Can resend or match recipients whose send is unknown"),
        ]
        indexes = [
            models.Index(fields=["tag"]),
            models.Index(fields=["follow_up_stage"]),
            models.Index(fields=["state"]),
        ]

    def __str__(self):
        return f"{self.tag} · {self.follow_up_stage} · {self.created_at:%Y-%m-%d}"

    @property
    def messages(self) -> dict[str, str]:
        """Each variant's message by its letter: {"A": message} for a blast without variants."""
        return dict(zip(VARIANT_LETTERS, [self.message, *self.variants], strict=False))


class BlastRecipient(models.Model):
    """One phone number in one blast, and where it stands in the funnel."""

    class Status(models.IntegerChoices):
        # Off the ladder: never counted as sent.
        SKIPPED = -30, "Skipped"
        FAILED = -20, "Failed"
        UNKNOWN = -10, "Unknown"
        # Not sent yet.
        QUEUED = 10, "Queued"
        SENDING = 15, "Sending"
        # The ladder: forward means greater, so funnel counts are status__gte=.
        PENDING = 20, "Pending"
        SERVER_ACK = 30, "Server ack"
        DELIVERY_ACK = 40, "Delivered"
        READ_ACK = 50, "Read"
        REPLIED = 60, "Replied"
        CLOSED = 70, "Closed"

    blast = models.ForeignKey(Blast, on_delete=models.CASCADE, related_name="recipients")
    # Every recipient but the team's canary phones is a contact.
    contact = models.ForeignKey(
        "Contact", null=True, blank=True, on_delete=models.PROTECT, related_name="recipients"
    )
    phone = models.CharField(max_length=16, help_text="E.164, e.g. +60123456789.")
    name = models.CharField(max_length=100, blank=True)
    message_id = models.CharField(max_length=MESSAGE_ID_MAX_LENGTH, null=True, blank=True, unique=True)
    status = models.SmallIntegerField(choices=Status.choices, default=Status.QUEUED)
    status_changed_at = models.DateTimeField(default=timezone.now)
    # The first time each stage was reached (gateway time when it gave one).
    sent_at = models.DateTimeField(null=True, blank=True)
    server_ack_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    replied_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    send_response = models.JSONField(null=True, blank=True, help_text="Raw WSAPME send answer.")
    # The send ledger: which worker holds the recipient, until when, and its send attempts.
    claimed_by = models.CharField(max_length=100, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Polling getMessageStatus: on a back-off ladder since sending, until the status is final.
    polls = models.PositiveSmallIntegerField(default=0)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    reply_text = models.TextField(blank=True, help_text="The recipient's first reply.")
    variant = models.CharField(
        max_length=1, blank=True, help_text="The variant of the message it gets (A to E)."
    )
    clicked_at = models.DateTimeField(
        null=True, blank=True, help_text="Its first click on a tracked link (link previews left out)."
    )
    is_canary = models.BooleanField(
        default=False,
        help_text="One of the team's phones (CANARY_PHONES): sent like the rest, left out of rates.",
    )
    # Set while a person's "check statuses now" waits for the poller to ask about this message.
    # No index of its own: the partial one below holds only the few rows that are marked.
    # Set by a person who marks the recipient replied or closed (the sale).
    mark_note = models.CharField(max_length=200, blank=True)
    deal_value = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    status_check = models.ForeignKey(
        "StatusCheck", null=True, blank=True, on_delete=models.SET_NULL, db_index=False, related_name="+"
    )

    class Meta:
        ordering = ["id"]
        permissions = [("mark_blastrecipient", "Can mark recipients replied or closed")]
        constraints = [
            models.UniqueConstraint(fields=["blast", "phone"], name="recipient_unique_phone_per_blast"),
        ]
        indexes = [
            # is_canary too, so the funnels (which leave canaries out) read this index alone.
            models.Index(fields=["blast", "status", "is_canary"], name="recipient_blast_status_canary"),
            models.Index(fields=["status", "claimed_until"], name="recipient_status_lease"),
            # The sender's claim walks a blast's queued recipients in order and stops at its batch:
            # without this it reads and sorts every queued row of a big blast on each claim.
            models.Index(
                fields=["blast", "id"], condition=Q(status=10), name="recipient_queued_order"
            ),  # QUEUED
            models.Index(fields=["next_poll_at"], name="recipient_next_poll"),
            models.Index(fields=["phone", "sent_at"], name="recipient_phone_sent"),
            # The poller's claim takes marked messages first, in check order.
            models.Index(
                fields=["status_check"],
                condition=Q(status_check__isnull=False),
                name="recipient_status_check",
            ),
        ]

    def __str__(self):
        return f"{self.name} {self.phone}".strip()

    @property
    def attributes(self) -> dict:
        """The contact's attributes, for placeholders (none for a canary phone)."""
        return self.contact.attributes if self.contact_id else {}


class StatusHistory(models.Model):
    """Append-only audit log: one row per applied status change, never updated.

    from_status/to_status: the recipient's status before and after the change.
    source: which path applied it (send, webhook, poll, inferred, manual, a tracked link's click).
    occurred_at: when the gateway says it happened (null when the payload had no time).
    recorded_at: when we applied it.
    actor: the staff user behind a manual change.
    raw: the payload (or the operator's note) that caused the change, as received.
    """

    class Source(models.TextChoices):
        SEND = "send", "Send"
        WEBHOOK = "webhook", "Webhook"
        POLL = "poll", "Poll"
        INFERRED = "inferred", "Inferred"
        MANUAL = "manual", "Manual"
        CLICK = "click", "Link click"

    recipient = models.ForeignKey(BlastRecipient, on_delete=models.CASCADE, related_name="history")
    from_status = models.SmallIntegerField(choices=BlastRecipient.Status.choices)
    to_status = models.SmallIntegerField(choices=BlastRecipient.Status.choices)
    source = models.CharField(max_length=10, choices=Source.choices)
    occurred_at = models.DateTimeField(null=True, blank=True)
    recorded_at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    raw = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["recorded_at", "id"]
        verbose_name_plural = "status history"
        indexes = [models.Index(fields=["recipient", "recorded_at"], name="history_recipient_time")]
        constraints = [
            models.CheckConstraint(condition=~Q(from_status=F("to_status")), name="history_is_a_change"),
        ]

    def __str__(self):
        return f"{self.get_from_status_display()} → {self.get_to_status_display()} ({self.source})"


class Device(models.Model):
    """A WSAPME device (a linked phone) and its pacing, shared by every sender process and host.

    Empty pacing fields fall back to the SEND_* settings. The rest is pacing state that
    senders update under this row's lock.
    """

    device_id = models.CharField(max_length=32, primary_key=True)
    label = models.CharField(max_length=100, blank=True)
    rate_per_minute = models.FloatField(null=True, blank=True, help_text="0: no pacing. Empty: the setting.")
    jitter = models.FloatField(null=True, blank=True, help_text="0.3 spaces sends 70%-130% of the interval.")
    hourly_cap = models.PositiveIntegerField(null=True, blank=True)
    daily_cap = models.PositiveIntegerField(null=True, blank=True)
    window_start = models.TimeField(null=True, blank=True, help_text="Send from this local time...")
    window_end = models.TimeField(null=True, blank=True, help_text="...until this one.")
    days = models.CharField(
        max_length=7, blank=True, help_text="ISO weekdays sending is allowed, e.g. 123456."
    )
    time_zone = models.CharField(max_length=64, blank=True)
    # Pacing state.
    next_slot_at = models.DateTimeField(null=True, blank=True)
    blocked_until = models.DateTimeField(null=True, blank=True, help_text="The gateway's Retry-After.")
    hour_start = models.DateTimeField(null=True, blank=True)
    hour_count = models.PositiveIntegerField(default=0)
    day = models.DateField(null=True, blank=True)
    day_count = models.PositiveIntegerField(default=0)

    def __str__(self):
        return self.label or self.device_id


class OptOut(models.Model):
    """A number that asked not to be messaged; every later blast skips it. `source` says where the
    entry came from: a STOP reply (its text and blast), an import, or a person."""

    class Source(models.TextChoices):
        REPLY = "reply", "A reply"
        IMPORT = "import", "An import"
        PERSON = "person", "A person"

    phone = models.CharField(max_length=16, unique=True, help_text="E.164.")
    reason = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.PERSON)
    blast = models.ForeignKey(
        Blast,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The STOP's blast.",
    )
    reply_text = models.TextField(blank=True, help_text="The reply that asked to stop.")
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "opt-out"
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.phone


class WebhookEvent(models.Model):
    """Every authenticated WSAPME callback, stored raw before we answer, and what the applier made of it.

    The webhook stores it RECEIVED and answers; `manage.py apply_events` applies it through the
    ledger and fills in the rest (kind, message id, number, state, note, applied_at).
    """

    class Kind(models.TextChoices):
        STATUS = "status", "Status"
        REPLY = "reply", "Reply"
        UNKNOWN = "unknown", "Not understood"

    class State(models.TextChoices):
        RECEIVED = "received", "Received, not applied yet"
        APPLIED = "applied", "Applied"
        NO_CHANGE = "no_change", "No change (duplicate or older)"
        WAITING = "waiting", "Waiting (an ack for its message id, a reply for its send to end)"
        UNATTRIBUTED = "unattributed", "Reply from no recent recipient"
        IGNORED = "ignored", "Ignored (status not understood)"
        REVIEW = "review", "Needs review (not understood, or failed to apply)"

    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    body = models.JSONField(null=True, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices, blank=True)  # blank until applied
    state = models.CharField(max_length=12, choices=State.choices)
    message_id = models.CharField(max_length=MESSAGE_ID_MAX_LENGTH, blank=True, db_index=True)
    status = models.CharField(max_length=20, blank=True, help_text="The status as the gateway wrote it.")
    phone = models.CharField(max_length=16, blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True, help_text="The gateway's time, when given.")
    recipient = models.ForeignKey(
        BlastRecipient, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_events"
    )
    note = models.CharField(max_length=255, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True, help_text="When the applier last applied it.")

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            models.Index(fields=["state", "received_at"], name="webhook_state_time"),
            # The applier's queue: only unapplied events, in arrival order (a small index, whatever the history).
            models.Index(fields=["id"], condition=models.Q(state="received"), name="webhook_unapplied"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.message_id or self.phone} ({self.state})"


class Heartbeat(models.Model):
    """A worker's sign of life: the sender loop every few seconds, each poll_statuses run when it ends."""

    class Role(models.TextChoices):
        SENDER = "sender", "Sender"
        POLLER = "poller", "Status poller"
        APPLIER = "applier", "Event applier"

    name = models.CharField(
        max_length=100, primary_key=True, help_text="host:pid for a sender; host for polls."
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    started_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now, db_index=True)
    note = models.CharField(max_length=200, blank=True, help_text="What its last run did.")

    class Meta:
        ordering = ["role", "-seen_at"]

    def __str__(self):
        return f"{self.get_role_display()} {self.name}"


class StatusCheck(models.Model):
    """A person's "check statuses now" on one blast: its unfinished messages, asked about by the poller.

    queued: the messages marked for the check when it was asked for.
    checked: those the poller has asked the gateway about so far; updated: whose status that moved;
    errors: those the gateway could not answer (counted in checked too).
    last_checked_at: when the poller last counted one, so the page can tell a stalled check.
    finished_at: when checked reached queued (or the poller gave up on messages it lost).
    """

    blast = models.ForeignKey(Blast, on_delete=models.CASCADE, related_name="status_checks")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    queued = models.PositiveIntegerField(default=0)
    checked = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-id"]

    def __str__(self):
        return f"Status check of {self.blast_id}: {self.checked} of {self.queued}"

    @property
    def not_checked(self) -> int:
        """Messages the gateway could not answer about, and any the poller lost (once it is finished)."""
        return self.errors + max(self.queued - self.checked, 0)


class AuditRecord(models.Model):
    """Who did what, when and through which interface. Only ever added to (prune_records drops rows
    older than AUDIT_KEEP_DAYS); no interface changes or deletes one."""

    class Via(models.TextChoices):
        PAGE = "page", "the pages"
        API = "api", "the API"
        ADMIN = "admin", "the admin"
        COMMAND = "command", "a command"
        SYSTEM = "system", "the system"

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        EDITED = "edited", "Edited"
        QUEUED = "queued", "Sent"
        PAUSED = "paused", "Paused"
        RESUMED = "resumed", "Resumed"
        CANCELLED = "cancelled", "Cancelled"
        COMPLETED = "completed", "Completed"
        RESENT_UNKNOWN = "resent_unknown", "Resent unknown"
        FOLLOW_UP = "follow_up", "Follow-up created"
        STATUS_CHECK = "status_check", "Statuses checked"
        EXPORTED = "exported", "Recipients exported"
        MARKED = "marked", "Recipient marked"
        MATCHED = "matched", "Send matched to a message"
        OPT_OUT_ADDED = "opt_out_added", "Opt-out added"
        OPT_OUT_REMOVED = "opt_out_removed", "Opt-out removed"
        OPT_OUTS_IMPORTED = "opt_outs_imported", "Opt-outs imported"
        CONTACT_SAVED = "contact_saved", "Contact saved"
        CONTACTS_IMPORTED = "contacts_imported", "Contacts imported"
        SEGMENT_SAVED = "segment_saved", "Segment saved"
        SEGMENT_DELETED = "segment_deleted", "Segment deleted"
        DEVICE_CHANGED = "device_changed", "Device changed"
        TEST_DECIDED = "test_decided", "Variant test decided"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True, help_text="Kept if the login is deleted.")
    via = models.CharField(max_length=10, choices=Via.choices)
    action = models.CharField(max_length=20, choices=Action.choices)
    blast = models.ForeignKey(Blast, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit")
    about = models.CharField(max_length=200, blank=True, help_text="What was acted on.")
    detail = models.JSONField(
        default=dict, blank=True, help_text="A reason, the filter and rows of an export."
    )

    class Meta:
        ordering = ["-at", "-id"]
        default_permissions = ("view",)
        indexes = [models.Index(fields=["blast", "at"], name="audit_blast_time")]

    def __str__(self):
        return (
            f"{self.at:%Y-%m-%d %H:%M} {self.actor_name or 'system'} {self.get_action_display()} {self.about}"
        )


class Alert(models.Model):
    """A message to people: a blast paused by itself or completed, a worker that went quiet, or webhook
    events left unapplied. Each event raises one alert (its key); delivery by email and webhook is
    recorded, failures too."""

    class Kind(models.TextChoices):
        PAUSED = "paused", "Paused by itself"
        COMPLETED = "completed", "Completed"
        WORKER_QUIET = "worker_quiet", "Worker quiet"
        BACKLOG = "backlog", "Webhook events waiting"

    key = models.CharField(max_length=200, unique=True, help_text="One alert per event.")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    blast = models.ForeignKey(Blast, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True, help_text="Why delivery failed, if it did.")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.text.splitlines()[0] if self.text else self.key


class ContactTag(models.Model):
    """A label on contacts ("VIP", "Raya 2026 buyers"); segments choose audiences by it."""

    name = models.CharField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Contact(models.Model):
    """One person, by phone number, across every blast: name, attributes and tags.

    attributes: a flat JSON object of text values from extra columns (city, product, last_order);
    messages use them as placeholders ({city|your area}).
    first_seen_at / last_seen_at: the first and latest time the number came in (a blast, an import,
    the API or a person).
    """

    phone = models.CharField(max_length=16, unique=True, help_text="E.164, e.g. +60123456789.")
    name = models.CharField(max_length=100, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    tags = models.ManyToManyField(ContactTag, blank=True, related_name="contacts")
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-last_seen_at", "-id"]
        indexes = [models.Index(fields=["-last_seen_at", "-id"], name="contact_last_seen")]

    def __str__(self):
        return f"{self.name} {self.phone}".strip()


class Segment(models.Model):
    """A saved audience: rules over contacts (segments/rules.py says what each means), all of which
    (match=all) or any of which (match=any) a contact meets. Opted-out contacts are never members."""

    class Match(models.TextChoices):
        ALL = "all", "All of the rules (AND)"
        ANY = "any", "Any of the rules (OR)"

    name = models.CharField(max_length=100, unique=True)
    match = models.CharField(max_length=3, choices=Match.choices, default=Match.ALL)
    rules = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class BlastRollup(models.Model):
    """A blast's overview numbers as of `computed_at` (reporting/rollups.py), so the overview reads one
    row a blast instead of every recipient. It holds only while the blast's live status counts still
    equal `counts`: any change the ledger makes to a sent recipient changes them for good."""

    blast = models.OneToOneField(Blast, primary_key=True, on_delete=models.CASCADE, related_name="rollup")
    computed_at = models.DateTimeField()
    time_zone = models.CharField(max_length=64, help_text="The zone `daily` counts days in.")
    counts = models.JSONField(help_text="Recipients (canaries left out) per status, when computed.")
    daily = models.JSONField(help_text="Per local day sent: recipients sent that day per status now.")
    timings = models.JSONField(help_text="How many were sent, and each stage's time-from-sent histogram.")

    def __str__(self):
        return f"Rollup of blast {self.blast_id} at {self.computed_at:%Y-%m-%d %H:%M}"


class VariantTest(models.Model):
    """Test then send the winner: a blast's variants go to `share` percent of its recipients first; the
    rest wait (held: their next attempt is HELD in variants.py) until `wait` after the test's last send,
    when the worker gives them the variant whose `metric` rate is highest beyond noise, or, when none
    is, splits them evenly. `verdict` says why, in words."""

    class Metric(models.TextChoices):
        REPLIED = "replied", "Reply rate"
        CLICKED = "clicked", "Click rate"

    blast = models.OneToOneField(
        Blast, primary_key=True, on_delete=models.CASCADE, related_name="variant_test"
    )
    share = models.PositiveSmallIntegerField(
        help_text="Percent of the recipients the variants are tested on."
    )
    wait = models.DurationField(help_text="How long after the test's last send the winner is chosen.")
    metric = models.CharField(max_length=10, choices=Metric.choices, default=Metric.REPLIED)
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Set when the test's sends are done.")
    decided_at = models.DateTimeField(null=True, blank=True)
    winner = models.CharField(max_length=1, blank=True, help_text="Blank once decided: inconclusive.")
    verdict = models.TextField(blank=True)

    def __str__(self):
        return f"Variant test of blast {self.blast_id}"


class Link(models.Model):
    """One http(s) URL of one recipient's message, sent as PUBLIC_BASE_URL/l/<code>: the code is random
    (96 bits), says nothing about the person, and leads to `url` until LINK_EXPIRY_DAYS after `created_at`."""

    code = models.CharField(max_length=22, primary_key=True)
    recipient = models.ForeignKey(BlastRecipient, on_delete=models.CASCADE, related_name="links")
    position = models.PositiveSmallIntegerField(help_text="Which link of the message, from 0.")
    url = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["recipient", "position"], name="link_unique_position"),
        ]

    def __str__(self):
        return f"/l/{self.code} → {self.url}"


class Click(models.Model):
    """Every request for a tracked link, kept. A link preview (WhatsApp's or the gateway's fetch, by its
    user agent or by arriving within seconds of the send) is kept with `preview` set and counts as no click."""

    link = models.ForeignKey(
        Link, on_delete=models.CASCADE, related_name="clicks", db_index=False
    )  # (link, at)
    at = models.DateTimeField(default=timezone.now)
    user_agent = models.CharField(max_length=255, blank=True)
    preview = models.BooleanField(default=False)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["link", "at"], name="click_link_time")]

    def __str__(self):
        return f"{'Preview' if self.preview else 'Click'} of {self.link_id} at {self.at:%Y-%m-%d %H:%M}"
