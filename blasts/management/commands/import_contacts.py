from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from ...audit import Actor, Via
from ...contacts.imports import LABELS, Mapping, contacts_import_file, table_open

SHOWN_ERRORS = 20


class Command(BaseCommand):
    help = (
        "Import contacts from a CSV or Excel (.xlsx) file with a header row, with a progress bar. Columns "
        "are guessed from their headers (English, Malay, Google Contacts, Outlook); --map changes them."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument(
            "--tag", action="append", default=[], dest="tags", metavar="TAG", help="A tag for every contact."
        )
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            dest="choices",
            metavar="COLUMN=FIELD",
            help=f"What a column is: {', '.join(LABELS)} or attribute:<key>, e.g. --map 'No. HP=phone'.",
        )

    def handle(self, *args, file: Path, tags: list[str], choices: list[str], **options):
        chosen = {}
        for choice in choices:
            column, sep, field = choice.partition("=")
            if not sep or not column.strip():
                raise CommandError(f"--map {choice!r}: write it as COLUMN=FIELD, e.g. --map 'Telefon=phone'.")
            chosen[column.strip()] = field.strip()
        try:
            opened = file.open("rb")
        except OSError as exc:
            raise CommandError(f"Cannot read {file}: {exc.strerror or exc}.") from None
        with opened:
            try:
                table = table_open(opened, file.name)
                mapping = Mapping.chosen(table.header, chosen)
            except ValueError as exc:  # ImportFileError too
                raise CommandError(f"{file.name}: {exc}") from None
            if problems := mapping.problems():
                raise CommandError(
                    f"{file.name}: {' '.join(problems)} Its columns: {', '.join(table.header)}; "
                    "choose with --map 'COLUMN=phone'."
                )
            if table.note:
                self.stderr.write(table.note)
            with tqdm(total=table.total, unit="row", file=self.stderr, dynamic_ncols=True) as bar:
                summary = contacts_import_file(
                    table=table,
                    mapping=mapping,
                    tags=tags,
                    by=Actor(None, Via.COMMAND),
                    progress=lambda done: bar.update(done - bar.n),
                )
        for error in summary.errors[:SHOWN_ERRORS]:
            self.stderr.write(str(error))
        if summary.invalid > SHOWN_ERRORS:
            self.stderr.write(f"… and {summary.invalid - SHOWN_ERRORS:,} more rows without a valid number.")
        self.stdout.write(f"{file.name}: {summary.line()}")
