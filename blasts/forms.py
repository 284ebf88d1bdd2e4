from datetime import timedelta

from django import forms
from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError

from .contacts.book import message_check, with_stored_attributes
from .follow_ups import MAX_AGE_HOURS
from .models import VARIANT_LETTERS, Blast, BlastRecipient, Contact, VariantTest
from .recipients import (
    MessagesPreview,
    ParsedRecipients,
    attribute_placeholders,
    file_text,
    messages_preview,
    parse_recipients,
    rows_from_text,
)
from .statuses import FOLLOW_UP_FROM
from .templatetags.blasts_extras import zone_name
from .variants import TEST_SHARES, variant_test_check, variants_assign, variants_check

CSV_MAX_BYTES = 2 * 1024 * 1024
KEPT_SALT = "blasts.new-blast.file"  # a file previewed once is carried, signed, to Create
KEPT_MAX_AGE = 24 * 3600
Status = BlastRecipient.Status


class BlastCreateForm(forms.ModelForm):
    """A new blast with its recipients pasted (`phone` or `phone,name` per line) or uploaded as CSV."""

    recipients_text = forms.CharField(
        label="Recipients",
        required=False,
        widget=forms.Textarea(attrs={"rows": 10, "placeholder": "+60123456789,Aisyah\n0198765432"}),
        help_text="One per line: phone, or phone,name. Local numbers are read as Malaysian.",
    )
    recipients_file = forms.FileField(
        label="…or a file",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.txt,.xlsx,text/csv"}),
        required=False,
        help_text="CSV (comma, semicolon or tab) or Excel .xlsx; a header row names the phone and name "
        "columns (English or Malay: phone, mobile, no. telefon, nama …), else phone first, then name.",
    )

    variant_b = forms.CharField(
        label="Variant B (optional)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="A second wording to test against the message (variant A): recipients are split between "
        "the variants at random, evenly, and the blast's page says which did better beyond noise.",
    )
    variant_c = forms.CharField(
        label="Variant C (optional)", required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    variant_d = forms.CharField(
        label="Variant D (optional)", required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    variant_e = forms.CharField(
        label="Variant E (optional)", required=False, widget=forms.Textarea(attrs={"rows": 3})
    )
    VARIANT_FIELDS = ("variant_b", "variant_c", "variant_d", "variant_e")
    test_share = forms.IntegerField(
        label="Test first on (% of recipients)",
        required=False,
        min_value=TEST_SHARES[0],
        max_value=TEST_SHARES[1],
        help_text="Optional, with variants: send them to this share first, then the rest the winner. Empty: split everyone.",
    )
    test_hours = forms.FloatField(
        label="…then wait (hours)",
        required=False,
        initial=4,
        min_value=0.01,
        max_value=7 * 24,
        help_text="After the test's last send, for replies and clicks to come in.",
    )
    test_metric = forms.ChoiceField(
        label="…and pick the best", choices=VariantTest.Metric.choices, initial="replied", required=False
    )
    TEST_FIELDS = ("test_share", "test_hours", "test_metric")

    class Meta:
        model = Blast
        fields = ["tag", "follow_up_stage", "message", "device", "scheduled_at", "parent", "track_links"]
        labels = {"message": "Message", "track_links": "Track clicks on links"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["message"].label = "Message (variant A when there are variants)"
        self.fields["message"].help_text += " Vary the wording per recipient with {Salam|Hi|Hello}."
        self.fields["device"].initial = settings.WSAPME_DEVICE
        when = self.fields["scheduled_at"]
        if type(when) is forms.DateTimeField:  # the pages' form; the admin splits it into its own pickers
            when.widget = forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")
        when.help_text = f"Send no earlier than this, in {zone_name()} time ({settings.TIME_ZONE}). Empty: as soon as it is sent."
        self.parsed = ParsedRecipients()
        self.audience = []  # the valid recipients with their contacts' attributes, for the preview
        self.kept, self.kept_name = "", ""  # the uploaded file, signed, for the next submit
        self.file_note = ""  # how the file was read, when people should know

    def _kept_file(self) -> str:
        """The text of the file a preview kept (nothing if none, or if its signature does not hold)."""
        try:
            kept = signing.loads(self.data.get("recipients_kept", ""), salt=KEPT_SALT, max_age=KEPT_MAX_AGE)
        except signing.BadSignature:
            return ""
        self.kept, self.kept_name = self.data["recipients_kept"], kept["name"]
        return kept["text"]

    def clean_recipients_file(self):
        upload = self.cleaned_data["recipients_file"]
        if upload is None:
            return self._kept_file()  # previewed before: Create needs no second upload
        if upload.size > CSV_MAX_BYTES:
            raise forms.ValidationError(f"The file is larger than {CSV_MAX_BYTES // 1024 // 1024} MB.")
        try:
            text, self.file_note = file_text(upload.read())
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
        self.kept_name = upload.name
        self.kept = signing.dumps({"name": upload.name, "text": text}, salt=KEPT_SALT, compress=True)
        return text

    def clean(self):
        """Lines that are not phone numbers stop Create; Preview shows them beside the valid ones, and
        "Create with the valid ones" (`create_valid`) leaves them out."""
        cleaned = super().clean()
        if "recipients_file" not in cleaned:  # the file itself was rejected
            return cleaned
        rows = rows_from_text(cleaned.get("recipients_text", "")) + rows_from_text(
            cleaned["recipients_file"], label="CSV line"
        )
        self.parsed = parse_recipients(rows)
        lenient = "preview" in self.data or "create_valid" in self.data
        if "create_valid" in self.data:
            self.parsed = self.parsed.valid_only()
        self.audience = self.parsed.recipients
        texts = {name: cleaned.get(name, "") for name in ("message", *self.VARIANT_FIELDS)}
        if self.audience and any(attribute_placeholders(text) for text in texts.values()):  # contacts' too
            self.audience = with_stored_attributes(self.parsed.recipients)
            for name, text in texts.items():
                try:
                    message_check(text, lambda key: any(key in r.attributes for r in self.audience))
                except ValidationError as exc:
                    self.add_error(name, exc.messages)
        only_file = cleaned["recipients_file"] and not cleaned.get("recipients_text")
        errors = self.parsed.list_errors if lenient else self.parsed.errors
        if self.parsed.rejected and not lenient and not self.parsed.list_errors:
            errors = [*errors, "Or press Preview: it lists these lines beside the valid ones and lets you create "
                      f"the blast with the {len(self.parsed.recipients)} valid recipients."]  # fmt: skip
        for error in errors:
            self.add_error("recipients_file" if only_file else "recipients_text", error)
        if not self.errors:
            fields = self.blast_fields()
            try:
                variant_test_check(variants_check(fields["variants"]), fields["test"])
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    self.add_error(field if field in self.fields else None, messages)
        return cleaned

    def groups(self) -> tuple[list, list]:
        """The page's fields: (the blast's, the variants' and their test's, folded unless in use)."""
        extra = {*self.VARIANT_FIELDS, *self.TEST_FIELDS}
        return [f for f in self if f.name not in extra], [f for f in self if f.name in extra]

    def variants_open(self) -> bool:
        return any(self.data.get(name) for name in (*self.VARIANT_FIELDS, "test_share")) or any(
            self.errors.get(name) for name in (*self.VARIANT_FIELDS, *self.TEST_FIELDS)
        )

    def blast_fields(self) -> dict:
        """What blast_create takes from this form (all but the recipients)."""
        data, test = self.cleaned_data, None
        fields = {name: data[name] for name in BlastCreateForm.Meta.fields}  # not the admin subclass's
        if data.get("test_share"):
            hours = data.get("test_hours") or self.fields["test_hours"].initial
            metric = data.get("test_metric") or VariantTest.Metric.REPLIED
            test = VariantTest(share=data["test_share"], wait=timedelta(hours=hours), metric=metric)
        return fields | {"variants": [data[name] for name in self.VARIANT_FIELDS], "test": test}

    def previews(self) -> tuple[list[tuple[str, MessagesPreview, int]], int]:
        """Per variant: its letter, its texts and how many get it, in a split like the one the blast will
        draw (the blast's own draw, seeded by its id, is made when it is created); and how many a test
        holds back for the winner."""
        messages = self.messages()
        if len(messages) == 1:
            return [("A", messages_preview(messages["A"], self.audience), len(self.audience))], 0
        test = self.blast_fields()["test"]
        split = variants_assign(0, [r.phone for r in self.audience], "".join(messages), test and test.share)
        groups = {letter: [r for r in self.audience if split[r.phone] == letter] for letter in messages}
        previews = [
            (letter, messages_preview(text, groups[letter]), len(groups[letter]))
            for letter, text in messages.items()
        ]
        return previews, sum(not letter for letter in split.values())

    def messages(self) -> dict[str, str]:
        """Each variant's message by its letter, as the blast will have them."""
        return dict(
            zip(
                VARIANT_LETTERS,
                [self.cleaned_data["message"], *variants_check(self.blast_fields()["variants"])],
                strict=False,
            )
        )


class MarkForm(forms.Form):
    """Marking a recipient replied or closed from the pages."""

    status = forms.ChoiceField(choices=[("REPLIED", "Replied"), ("CLOSED", "Closed (sale made)")])
    note = forms.CharField(max_length=200, required=False, label="Note (optional)")
    deal_value = forms.DecimalField(
        max_digits=12, decimal_places=2, min_value=0, required=False, label="Deal value, RM (optional)"
    )


class BlastEditForm(forms.ModelForm):
    """A blast's own fields changed in the admin: a placeholder must still be one its recipients have."""

    class Meta:
        model = Blast
        fields = [
            "tag",
            "follow_up_stage",
            "message",
            "device",
            "scheduled_at",
            "parent",
            "track_links",
        ]  # the admin's

    def clean_message(self):
        message = self.cleaned_data["message"]
        recipients = Contact.objects.filter(recipients__blast=self.instance)
        try:
            message_check(message, lambda key: recipients.filter(attributes__has_key=key).exists())
        except ValidationError as exc:
            raise ValidationError(exc.messages) from None
        return message


class FollowUpForm(forms.Form):
    status = forms.ChoiceField(
        choices=[(name, cell.label) for name, cell in FOLLOW_UP_FROM.items()], label="Recipients"
    )
    min_age_hours = forms.IntegerField(
        label="for at least (hours)",
        min_value=0,
        max_value=MAX_AGE_HOURS,
        initial=0,
        required=False,
        help_text="0: any time. 24 = a day, 72 = three days. Since reaching the status; for read, not "
        "clicked: since reading; for clicked, not replied: since the first click.",
    )
    message = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}))

    def clean_min_age_hours(self):
        return timedelta(hours=self.cleaned_data["min_age_hours"] or 0)


class CompareForm(forms.Form):
    """Two things to compare: each a blast, a tag or a follow-up stage ("blast:12", "tag:Promo", …)."""

    a = forms.ChoiceField(label="Compare")
    b = forms.ChoiceField(label="with")

    def __init__(self, *args, choices, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("a", "b"):
            self.fields[name].choices = [("", "—"), *choices]

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("a") and cleaned.get("a") == cleaned.get("b"):
            self.add_error("b", "Choose something else to compare with.")
        return cleaned
