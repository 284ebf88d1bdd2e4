from django import forms
from django.core import signing

from ..forms import CSV_MAX_BYTES
from ..models import OptOut
from ..recipients import file_text, normalize_phone
from .services import opt_out_rows, opt_out_since, opt_out_since_words

KEPT_SALT = "blasts.opt-out-import.file"  # a file read once is carried, signed, to the next submit
KEPT_MAX_AGE = 24 * 3600
REASON_MAX = OptOut._meta.get_field("reason").max_length


class OptOutForm(forms.ModelForm):
    """A number put on the list by a person, in any format, with the reason (the page and the admin)."""

    phone = forms.CharField(
        label="Phone number",
        max_length=40,
        help_text="Any format: 012-345 6789, +60 12-345 6789. Local numbers are read as Malaysian.",
    )
    reason = forms.CharField(
        max_length=REASON_MAX, help_text="Why, for whoever reads the list later: e.g. “Asked by phone”."
    )

    class Meta:
        model = OptOut
        fields = ["phone", "reason"]

    def clean_phone(self):
        try:
            phone = normalize_phone(self.cleaned_data["phone"])
        except ValueError as exc:
            raise forms.ValidationError(f"This is {exc}.") from None
        if listed := opt_out_since(phone):
            raise forms.ValidationError(opt_out_since_words(listed))
        return phone


class OptOutRemoveForm(forms.Form):
    reason = forms.CharField(
        max_length=REASON_MAX,
        help_text="Kept in the audit trail: e.g. “Asked to hear from us again, by phone on 3 May”.",
    )


def upload_text(upload) -> tuple[str, str]:
    """An uploaded file as text, read as a blast's upload is (an .xlsx's first sheet, a BOM, Excel's
    UTF-16 "Unicode Text", Windows-1252), and a note when people should check how it was read."""
    if upload.size > CSV_MAX_BYTES:
        raise forms.ValidationError(f"The file is larger than {CSV_MAX_BYTES // 1024 // 1024} MB.")
    try:
        return file_text(upload.read())
    except ValueError as exc:
        raise forms.ValidationError(str(exc)) from None


class OptOutImportForm(forms.Form):
    """A file of numbers to put on the list, with a reason for them all (or a reason column)."""

    file = forms.FileField(
        label="File of phone numbers",
        required=False,
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.txt,.xlsx,text/csv"}),
        help_text="CSV (comma, semicolon or tab) or Excel .xlsx. A header row names the phone column "
        "(phone, mobile, no. telefon …) and may name a reason column (reason, sebab); without one, "
        "the first column is the number.",
    )
    reason = forms.CharField(
        max_length=REASON_MAX,
        help_text="For every number without a reason of its own: e.g. “Unsubscribed on the website”.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows = []
        self.kept, self.kept_name, self.file_note = "", "", ""

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload is None:  # read before, with another field wrong: no need to choose it again
            try:
                kept = signing.loads(self.data.get("kept", ""), salt=KEPT_SALT, max_age=KEPT_MAX_AGE)
            except signing.BadSignature:
                raise forms.ValidationError("Choose a file of phone numbers.") from None
            text, name, self.file_note = kept["text"], kept["name"], kept["note"]
        else:
            (text, self.file_note), name = upload_text(upload), upload.name
        self.rows = opt_out_rows(text)
        if not self.rows:
            raise forms.ValidationError(
                "The file has no phone numbers: one a line, or a column headed phone."
            )
        self.kept_name = name
        self.kept = signing.dumps({"name": name, "text": text, "note": self.file_note}, salt=KEPT_SALT,
                                  compress=True)  # fmt: skip
        return name
