"""Contact import: the page (upload, choose what each column is, see what was done) and the API's
POST /api/contacts/import (a file, or a JSON list of contacts). Both call one service."""

import json

from django import forms
from django.conf import settings
from django.shortcuts import render
from django.views.generic import View
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from ..api import ActionPermission, _by
from ..text import clean_text
from ..views import StaffOnly, by_page
from .imports import (
    UPLOAD_MAX_BYTES,
    Entry,
    ImportFileError,
    Mapping,
    attribute_keys,
    contacts_import,
    contacts_import_file,
    field_choices,
    kept_import,
    kept_keep,
    kept_open,
    table_open,
    tags_split,
)

TOO_LARGE = f"The file is larger than {UPLOAD_MAX_BYTES // 1024 // 1024} MB: split it, or import it with `manage.py import_contacts`."
TEMPLATE = "blasts/contact_import.html"


class ContactUploadForm(forms.Form):
    file = forms.FileField(
        label="Contacts file",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,.txt,.xlsx,text/csv"}),
        help_text=f"CSV (comma, semicolon or tab) or Excel .xlsx, up to {UPLOAD_MAX_BYTES // 1024 // 1024} MB, "
        "with a header row: exports from Google Contacts and Outlook work as they are.",
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > UPLOAD_MAX_BYTES:
            raise forms.ValidationError(TOO_LARGE)
        try:
            self.table = table_open(upload, upload.name)
        except ImportFileError as exc:
            raise forms.ValidationError(str(exc)) from None
        self.kept = kept_keep(upload, upload.name)
        return upload

    @classmethod
    def refused(cls, message: str) -> "ContactUploadForm":
        """Step 1 again, saying why the file kept from it cannot be used."""
        form = cls()
        form.cleaned_data = {}
        form.full_clean()  # an unbound form: only makes its (empty) errors
        form.add_error(None, message)
        return form


class ContactMappingForm(forms.Form):
    """What each column of the file is (guessed from its header), and tags for everyone in it."""

    kept = forms.CharField(widget=forms.HiddenInput)
    tags = forms.CharField(
        label="Tags for every contact in this file (optional)",
        required=False,
        max_length=1000,
        help_text="Separated by commas, e.g. Raya 2026, Walk-in. A tags column adds its own as well.",
    )

    def __init__(self, *args, table, **kwargs):
        super().__init__(*args, **kwargs)
        self.table = table
        guess = Mapping.guess(table.header).fields
        self.columns = []
        for i, (header, key) in enumerate(zip(table.header, attribute_keys(table.header), strict=True)):
            name = f"column_{i}"
            self.fields[name] = forms.ChoiceField(
                label=clean_text(header) or f"Column {i + 1}", choices=field_choices(key), initial=guess[i]
            )
            samples = [row[i] for row in table.samples if i < len(row) and row[i]]
            self.columns.append((self[name], samples))

    def clean(self):
        cleaned = super().clean()
        fields = [cleaned.get(f"column_{i}") for i in range(len(self.table.header))]
        if all(fields):
            self.mapping = Mapping(fields)
            for problem in self.mapping.problems():
                self.add_error(None, problem)
        cleaned["tags"] = tags_split(cleaned.get("tags", ""))
        return cleaned


def _page(request, *, upload=None, mapping=None, summary=None, table=None):
    """The page at its step: `upload` (1), `mapping` (2) or `summary` (3)."""
    table = table or getattr(mapping, "table", None)
    context = {"upload": upload, "mapping": mapping, "summary": summary, "table": table}
    return render(request, TEMPLATE, context)


class ContactImportView(StaffOnly, View):
    """Step 1: upload a file. Step 2: say what each column is (the file is kept, signed, meanwhile).
    Step 3: what the import did, row by row where a row could not be imported."""

    action = "contact_import"

    def get(self, request):
        return _page(request, upload=ContactUploadForm())

    def post(self, request):
        if "kept" not in request.POST:
            upload = ContactUploadForm(request.POST, request.FILES)
            if not upload.is_valid():
                return _page(request, upload=upload)
            return _page(
                request, mapping=ContactMappingForm(initial={"kept": upload.kept}, table=upload.table)
            )
        try:
            path, name = kept_open(request.POST["kept"])
            with path.open("rb") as file:
                form = ContactMappingForm(request.POST, table=table_open(file, name))
                valid = form.is_valid()
        except ImportFileError as exc:
            return _page(request, upload=ContactUploadForm.refused(str(exc)))
        if not valid:
            return _page(request, mapping=form)
        summary = kept_import(
            token=form.cleaned_data["kept"],
            mapping=form.mapping,
            tags=form.cleaned_data["tags"],
            by=by_page(request),
        )
        return _page(request, summary=summary, table=form.table)


# --- the API ---------------------------------------------------------------------------------------


class StoredText(serializers.CharField):
    """Text from outside made storable (NUL characters, lone surrogates replaced), not refused."""

    def to_internal_value(self, data):
        return clean_text(super().to_internal_value(data))


class ContactInSerializer(serializers.Serializer):
    phone = StoredText(
        max_length=100,
        allow_blank=True,  # a row without a number: counted invalid and listed, as in a file
        help_text="As written: local numbers are read as Malaysian.",
    )
    name = StoredText(required=False, allow_blank=True, default="", max_length=1000)
    tags = serializers.ListField(
        child=StoredText(max_length=200), required=False, default=list, max_length=100
    )
    attributes = serializers.DictField(
        child=StoredText(allow_blank=True, max_length=1000), required=False, default=dict
    )


class ContactFileSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="CSV or Excel .xlsx with a header row.")
    mapping = serializers.CharField(
        required=False,
        help_text='JSON: {"column header": "phone" | "name" | "given" | "family" | "tags" | "ignore" | '
        '"attribute:<key>"}. Columns not named are guessed from their header.',
    )
    tags = serializers.ListField(
        child=StoredText(max_length=200), required=False, help_text="For every contact."
    )


class RowErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(
        help_text="Row number in the file (the header's row counted), or list index."
    )
    phone = serializers.CharField(help_text="As given.")
    why = serializers.CharField()


class ImportSummarySerializer(serializers.Serializer):
    rows = serializers.IntegerField(help_text="Rows read (blank ones skipped).")
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    duplicates = serializers.IntegerField(help_text="Rows whose number came earlier: merged into it.")
    invalid = serializers.IntegerField(help_text="Rows without a valid phone number.")
    errors = RowErrorSerializer(many=True, help_text="The first 1,000 invalid rows.")
    note = serializers.CharField(help_text="How the file was read, when it matters (its encoding).")


def _too_large(message: str) -> Response:
    return Response({"detail": message}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)


class ContactImportAPIView(APIView):
    """POST a CSV/Excel file (multipart: file, optional mapping, tags) or a JSON list of contacts."""

    permission_classes = [ActionPermission]
    parser_classes = [JSONParser, MultiPartParser]
    action = "contact_import"

    @extend_schema(
        operation_id="contacts_import",
        request={
            "application/json": ContactInSerializer(many=True),
            "multipart/form-data": ContactFileSerializer,
        },
        responses={
            200: ImportSummarySerializer,
            400: OpenApiResponse(description="What is wrong, by field (or by item index)."),
            413: OpenApiResponse(description="The file or the JSON is too large."),
            415: OpenApiResponse(description="Neither JSON nor multipart/form-data."),
        },
    )
    def post(self, request):
        """Create or update contacts (a name given now wins, attributes merge, tags add). Rows without
        a valid phone number are counted and listed, not refused."""
        size = int(request.META.get("CONTENT_LENGTH") or 0)
        if request.content_type.startswith("multipart/"):
            if size > UPLOAD_MAX_BYTES + 64 * 1024:
                return _too_large(TOO_LARGE)
            return self._file(request)
        if size > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            return _too_large(
                f"Send up to {settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024:,} KB of JSON at a time (about "
                "10,000 contacts), or upload a file."
            )
        given = ContactInSerializer(data=request.data, many=True)  # an empty list imports nothing
        given.is_valid(raise_exception=True)
        entries = (
            Entry(index, item["phone"], item["name"], item["attributes"], item["tags"])
            for index, item in enumerate(given.validated_data)
        )
        summary = contacts_import(rows=entries, by=_by(request), source="the API")
        return Response(ImportSummarySerializer(summary.as_dict() | {"note": ""}).data)

    def _file(self, request):
        given = ContactFileSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        upload, data = given.validated_data["file"], given.validated_data
        if upload.size > UPLOAD_MAX_BYTES:
            return _too_large(TOO_LARGE)
        try:
            choices = json.loads(data.get("mapping") or "{}")
        except ValueError:
            raise ValidationError({"mapping": ['Give JSON: {"column header": "phone", …}.']}) from None
        if not isinstance(choices, dict):
            raise ValidationError({"mapping": ['Give a JSON object: {"column header": "phone", …}.']})
        try:
            table = table_open(upload, upload.name)
        except ImportFileError as exc:
            raise ValidationError({"file": [str(exc)]}) from None
        try:
            mapping = Mapping.chosen(table.header, {clean_text(str(k)): v for k, v in choices.items()})
        except ValueError as exc:
            raise ValidationError({"mapping": [clean_text(str(exc))]}) from None
        if problems := mapping.problems():
            raise ValidationError({"mapping": [clean_text(p) for p in problems]})
        tags = [tag for given in data.get("tags", []) for tag in tags_split(given)]
        summary = contacts_import_file(table=table, mapping=mapping, tags=tags, by=_by(request))
        return Response(ImportSummarySerializer(summary.as_dict() | {"note": table.note}).data)
