"""19. Contact import: `manage.py import_contacts` of a 100,000-row CSV as marketers have them (Malaysian
numbers written six ways, names, three attribute columns, a tags column, 2% of the rows repeating a
number met earlier, 1% not numbers), each run in a process of its own: wall time and peak RSS.

References in the same run: the same file read and checked alone in a fresh process (the reader,
the column mapping and phone-number parsing, nothing written), for time; the same command importing
10,000 rows, for memory (flat memory: the peak does not grow with the file). The file is then
imported again with every contact's attributes changed: the update path, which rewrites every row.
"""

import csv
import random
import sys
import tempfile
from pathlib import Path

from bench import common

FULL = {"rows": 100_000, "small": 10_000}
SMOKE = {"rows": 300, "small": 50}
TARGET_SECONDS = 30.0
TARGET_MB = 300.0

GIVEN = ("Aisyah", "Nur", "Siti", "Ahmad", "Muhammad", "Wei Ming", "Mei Ling", "Ah Kow", "Rajesh", "Priya",
         "Kavitha", "Farid", "Hafiz", "Zainab", "Jia Hui", "Arjun", "Lakshmi", "Ismail", "Azman", "Chong")  # fmt: skip
FAMILY = ("Rahman", "Abdullah", "Tan", "Lim", "Lee", "Wong", "Kumar", "Ismail", "Hassan", "Ng", "Subramaniam",
          "Othman", "Yusof", "Chan", "Raj")  # fmt: skip
CITIES = ("Kuala Lumpur", "Petaling Jaya", "Shah Alam", "Ipoh", "Johor Bahru", "Klang", "Kota Kinabalu",
          "Kuching", "Georgetown", "Seremban", "Melaka", "Kuantan")  # fmt: skip
PRODUCTS = ("Baju Kurung", "Tudung", "Songkok", "Kain Batik", "Kebaya", "Sampin", "Kurta", "Cheongsam")
TAGS = ("", "", "", "VIP", "Raya 2026", "VIP; Raya 2026", "Walk-in|Online")
MOBILE = ("12", "13", "16", "17", "19")
INVALID = ("12345", "6.01235E+10", "", "not given", "+1 555 0100", "0123")
READ_ALONE = """
import sys
import django
django.setup()
from blasts.contacts.imports import Mapping, table_open
from blasts.recipients import _first_number, normalize_phone
valid = 0
with open(sys.argv[1], "rb") as file:
    table = table_open(file, "bench.csv")
    mapping = Mapping.guess(table.header)
    for number, cells in table.rows():
        entry = mapping.read(number, cells)
        try:
            normalize_phone(_first_number(entry.phone))
            valid += 1
        except ValueError:
            pass
print(valid)
"""


def written(number: int, how: int) -> str:
    """A Malaysian mobile number, one for each `number` below 35,000,000 (+6012 2000000 to +6019 8999999:
    every one valid), as people write it, six ways."""
    prefix, rest = MOBILE[number // 7_000_000], str(2_000_000 + number % 7_000_000)
    return (
        f"+60{prefix}{rest}",
        f"0{prefix}-{rest[:3]} {rest[3:]}",
        f"0{prefix}{rest}",
        f"60{prefix}{rest}",
        f"+60 {prefix}-{rest[:3]} {rest[3:]}",
        f"0{prefix} {rest[:3]} {rest[3:]}",
    )[how % 6]


def contacts_csv(path: Path, rows: int, *, first: int, seed: int) -> dict[str, int]:
    """Write the file; what it holds: rows, distinct valid numbers, repeats, invalid rows."""
    rng = random.Random(seed)
    counts = {"rows": rows, "contacts": 0, "duplicates": 0, "invalid": 0}
    used: list[int] = []
    with path.open("w", newline="", encoding="utf-8") as file:
        out = csv.writer(file)
        out.writerow(["Name", "Phone", "City", "Product", "Last Order", "Tags"])
        for n in range(rows):
            roll = rng.random()
            if roll < 0.01:
                phone = rng.choice(INVALID)
                counts["invalid"] += 1
            elif roll < 0.03 and used:
                phone = written(rng.choice(used), rng.randrange(6))
                counts["duplicates"] += 1
            else:
                number = first + n * 7919 % 5_000_000  # each n its own number
                used.append(number)
                phone = written(number, rng.randrange(6))
                counts["contacts"] += 1
            name = f"{rng.choice(GIVEN)} {rng.choice(FAMILY)}" if rng.random() < 0.95 else ""
            order = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            out.writerow([name, phone, rng.choice(CITIES), rng.choice(PRODUCTS), order, rng.choice(TAGS)])
    return counts


def import_contacts(path: Path) -> tuple[float, float, list[float], str]:
    return common.run_measured([sys.executable, "manage.py", "import_contacts", str(path), "--tag", "Bench"])


def bench(smoke: bool) -> list[common.Row]:
    size = SMOKE if smoke else FULL
    with tempfile.TemporaryDirectory(prefix="blasts-bench-imports-") as folder:
        return measured(Path(folder), size["rows"], size["small"])


def measured(folder: Path, n: int, small: int) -> list[common.Row]:
    from blasts.models import Contact

    big, changed, little = folder / "contacts.csv", folder / "contacts-changed.csv", folder / "small.csv"
    made = contacts_csv(big, n, first=0, seed=1)  # numbers below 5,000,000
    contacts_csv(changed, n, first=0, seed=1)  # the same numbers and names …
    changed.write_text(changed.read_text().replace(",2026-", ",2027-"))  # … every last order changed
    made_small = contacts_csv(little, small, first=5_000_000, seed=2)  # numbers of their own
    common.say(f"{n:,} rows ({big.stat().st_size / 1e6:.1f} MB): {made}")

    common.say("reading and checking the file alone")
    read_seconds, read_peak, _, valid = common.run_measured([sys.executable, "-c", READ_ALONE, str(big)])
    common.check(int(valid) == made["contacts"] + made["duplicates"], f"{valid} valid rows read")
    common.say(f"import_contacts: {small:,} rows")
    _, small_peak, _, _ = import_contacts(little)
    common.say(f"import_contacts: {n:,} rows")
    seconds, peak, samples, line = import_contacts(big)
    expected = f"{n:,} rows: {made['contacts']:,} created, 0 updated, 0 unchanged, {made['duplicates']:,} "
    common.check(line.startswith(f"contacts.csv: {expected}"), f"the summary said {line!r}, not {expected}")
    total = Contact.objects.count()
    common.check(total == made["contacts"] + made_small["contacts"], f"{total:,} contacts after the import")
    common.say(f"import_contacts: {n:,} rows again, every contact's attributes changed")
    again_seconds, again_peak, _, again = import_contacts(changed)
    common.check(f" {made['contacts']:,} updated" in again, f"the second import said {again!r}")

    growth = (
        f" RSS {samples[0]:.0f} MB after 2 s, {samples[-1]:.0f} MB at the last sample." if samples else ""
    )
    return [
        common.Row(
            f"19. Contact import: {n:,} rows (manage.py import_contacts)",
            f"{seconds:.1f} s",
            f"reading and checking the file alone {read_seconds:.1f} s",
            f"{seconds / read_seconds:.2f}x",
            f"< {TARGET_SECONDS:.0f} s",
            seconds < TARGET_SECONDS,
            f"{n / seconds:,.0f} rows/s; {line.strip()}.{growth}",
        ),
        common.Row(
            f"19. Contact import: {n:,} rows again, every contact updated",
            f"{again_seconds:.1f} s",
            f"the first import {seconds:.1f} s",
            f"{again_seconds / seconds:.2f}x",
            f"< {TARGET_SECONDS:.0f} s",
            again_seconds < TARGET_SECONDS,
            f"{again.strip()}; peak RSS {again_peak:.0f} MB.",
        ),
        common.Row(
            f"19. Contact import: peak memory, {n:,} rows",
            f"{peak:.1f} MB peak RSS",
            f"{small:,} rows {small_peak:.1f} MB",
            f"{peak / small_peak:.2f}x",
            f"< {TARGET_MB:.0f} MB",
            peak < TARGET_MB,
            f"Reading and checking the file alone peaked at {read_peak:.0f} MB.",
        ),
    ]


if __name__ == "__main__":
    common.main(__doc__, bench)
