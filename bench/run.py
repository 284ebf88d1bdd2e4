"""`make bench`: run every benchmark script in a process of its own, print one table, write
bench/RESULTS.md with the machine's description. `--smoke` (make bench-smoke) runs tiny sizes in
seconds, checks only that nothing crashed or was lost, and writes no file.

`--scale N` (make bench SCALE=N; not part of the default run) runs only the reporting script, with N
times its blasts (BENCH_SCALE=N, see bench/reporting.py), and writes its figures and the seeding time
to a section of their own in RESULTS.md's hand-kept part, replacing the one a scaled run wrote
before; the rest of the file is left as it is. With --smoke too it writes nothing.

The database `<name>_bench` (`_bench_smoke`) on DATABASE_URL's server (default
postgres://postgres@127.0.0.1:5432/blasts_bench) is made afresh and dropped at the end.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from bench import common

SCRIPTS = ("send", "overhead", "webhooks", "links", "reporting", "polling", "memory", "imports", "contacts")
RESULTS = Path(__file__).with_name("RESULTS.md")
KEPT = "<!-- Everything below this line is written by hand and kept when make bench rewrites this file. -->"
SCALED_BEGIN = (
    "<!-- Written by make bench SCALE=N (bench/run.py --scale); the next scaled run replaces it. -->"
)
SCALED_END = "<!-- End of the scaled run. -->"


def machine(url: str) -> list[tuple[str, str]]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?"
    )
    memory_kib = int(
        next(
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    )
    release = Path("/etc/os-release")
    system = (
        next(
            (
                line.split("=", 1)[1].strip('"')
                for line in release.read_text().splitlines()
                if line.startswith("PRETTY_NAME")
            ),
            platform.platform(),
        )
        if release.exists()
        else platform.platform()
    )
    with common._connect_server(url) as conn:
        postgres = conn.execute("SHOW server_version").fetchone()[0]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=common.ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=common.ROOT, capture_output=True, text=True
    ).stdout.strip()
    return [
        ("CPU", f"{model}, {os.cpu_count()} cores"),
        ("RAM", f"{memory_kib / 1024 / 1024:.1f} GiB"),
        ("OS", f"{system}, Linux {platform.release()}"),
        ("Python", platform.python_version()),
        ("PostgreSQL", f"{postgres} (same machine, loopback)"),
        ("Django, gunicorn", f"{metadata.version('django')}, {metadata.version('gunicorn')}"),
        ("Commit", f"{commit or '?'}{' with uncommitted changes' if dirty else ''}"),
    ]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run_script(
    name: str, smoke: bool, url: str, logs: Path, env: dict[str, str] | None = None
) -> list[common.Row] | None:
    """One script in its own process (its log in `logs`, `env` added to its environment); its rows,
    or None when it failed."""
    output, log = logs / f"{name}.json", logs / f"{name}.log"
    command = [sys.executable, "-m", f"bench.{name}", "--json", str(output), *(["--smoke"] if smoke else [])]
    print(f"== {name} (load average {load_average()})", flush=True)
    started = time.monotonic()
    with log.open("wb") as stderr:
        code = subprocess.call(
            command,
            cwd=common.ROOT,
            env=os.environ | {"BENCH_DATABASE_URL": url} | (env or {}),
            stderr=stderr,
        )
    print(f"   {time.monotonic() - started:.0f} s, log {log}", flush=True)
    if code != 0:
        print(
            f"!! bench.{name} failed (exit {code}); the end of its log:",
            *log.read_text().splitlines()[-25:],
            sep="\n",
        )
        return None
    return [common.Row(**row) for row in json.loads(output.read_text())]


def markdown(rows: list[common.Row], facts: list[tuple[str, str]], started: datetime.datetime) -> str:
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (bench/run.py) on {started:%Y-%m-%d %H:%M} UTC. Every reference was measured "
        "in the same run; `ratio` is measured ÷ reference. Settings: DEBUG off, LOG_LEVEL=INFO, pacing off "
        "(SEND_RATE_PER_MINUTE=0, POLL_RATE_PER_SECOND=0), every other setting at its default; the sandbox "
        "gateway runs in its own process (see bench/common.py).",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {cell(value)} |" for name, value in facts),
        "",
        "## Results",
        "",
        *result_lines(rows),
        "",
        "## Notes (measured in the same run)",
        "",
        *(f"- **{r.figure}**: {r.notes}" for r in rows if r.notes),
        "",
        KEPT,
    ]
    return "\n".join(lines)


def result_lines(rows: list[common.Row], target: str = "target") -> list[str]:
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    return [
        f"| figure | measured | reference (same run) | ratio | {target} | result |",
        "|---|---|---|---|---|---|",
        *(
            f"| {cell(r.figure)} | {cell(r.measured)} | {cell(r.reference)} | {cell(r.ratio)} | {cell(r.target)} | "
            f"{'**MISS**' if r.ok is False else common.verdict(r.ok)} |"
            for r in rows
        ),
    ]


def scaled_section(
    rows: list[common.Row], facts: list[tuple[str, str]], started: datetime.datetime, factor: float
) -> str:
    """The scaled run's section of RESULTS.md, between SCALED_BEGIN and SCALED_END."""
    from bench.reporting import FULL

    blasts = max(10, round(FULL["blasts"] * factor))
    recipients = blasts * FULL["per_blast"]
    fact = dict(facts)
    seeding = next((r.measured for r in rows if "seeding" in r.figure), "?")
    return "\n".join(
        [
            SCALED_BEGIN,
            "",
            f"## Reporting at {factor:g}x ({recipients:,} recipients)",
            "",
            f"Written by `make bench SCALE={factor:g}` (`python -m bench.run --scale {factor:g}`, not part of "
            f"the default run) on {started:%Y-%m-%d %H:%M} UTC, commit {fact.get('Commit', '?')}: "
            f"bench/reporting.py with {blasts:,} blasts of {FULL['per_blast']} recipients over the same "
            f"{FULL['days']} days as the full run, so a month holds {factor:g}x the blasts. Seeding took "
            f"**{seeding}**. Load average (1, 5, 15 min) before / after: "
            f"{fact.get('Load average (1, 5, 15 min) before / after', '?')}; run time "
            f"{fact.get('Run time', '?')}; the machine ({fact.get('CPU', '?')}, {fact.get('RAM', '?')} RAM, "
            f"PostgreSQL {fact.get('PostgreSQL', '?')}) is shared. Every reference was measured in the same run. "
            f"The targets are those of the full size ({FULL['blasts'] * FULL['per_blast']:,} recipients): "
            "at this size they are informational.",
            "",
            *result_lines(rows, "target (full size; informational)"),
            "",
            *(f"- **{r.figure}**: {r.notes}" for r in rows if r.notes),
            "",
            SCALED_END,
        ]
    )


def write_scaled(section: str) -> None:
    """Put `section` in RESULTS.md's hand-kept part: where the last scaled run's was, or right after KEPT."""
    text = RESULTS.read_text() if RESULTS.exists() else KEPT + "\n"
    if KEPT not in text:
        text += f"\n{KEPT}\n"
    head, kept = text.split(KEPT, 1)
    begin, end = kept.find(SCALED_BEGIN), kept.find(SCALED_END)
    if begin >= 0 and end > begin:
        kept = kept[:begin] + section + kept[end + len(SCALED_END) :]
    else:
        kept = f"\n\n{section}" + kept
    RESULTS.write_text(head + KEPT + kept)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds long; no RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    parser.add_argument(
        "--scale",
        type=float,
        metavar="N",
        help="only the reporting script, with N times its blasts (10: 10,000,000 recipients); its "
        "figures go to their own section of RESULTS.md's hand-kept part",
    )
    parser.add_argument(
        "scripts", nargs="*", metavar="SCRIPT", help=f"some of: {' '.join(SCRIPTS)} (default: all)"
    )
    args = parser.parse_args()
    if unknown := set(args.scripts) - set(SCRIPTS):
        parser.error(f"no script {', '.join(sorted(unknown))}; there are {', '.join(SCRIPTS)}")
    if args.scale is not None:
        if args.scale <= 0:
            parser.error("--scale must be a positive number")
        if set(args.scripts) - {"reporting"}:
            parser.error("--scale runs the reporting script only")
        args.scripts = ["reporting"]
    args.scripts = args.scripts or list(SCRIPTS)
    env = {} if args.scale is None else {"BENCH_SCALE": f"{args.scale:g}"}
    url = common.bench_database_url(os.environ.get("DATABASE_URL"), smoke=args.smoke)
    started, clock = datetime.datetime.now(datetime.UTC), time.monotonic()
    load_before = load_average()
    common.database_create(url, fresh=True)
    rows, failed = [], []
    try:
        logs = Path(tempfile.mkdtemp(prefix="blasts-bench-"))
        for name in args.scripts:
            found = run_script(name, args.smoke, url, logs, env)
            rows += found or []
            failed += [] if found is not None else [name]
        facts = machine(url)
    finally:
        if not args.keep:
            common.database_drop(url)
    minutes = (time.monotonic() - clock) / 60
    facts += [
        ("Load average (1, 5, 15 min) before / after", f"{load_before} / {load_average()}"),
        ("Run time", f"{minutes:.1f} min"),
    ]
    print()
    print(common.table(rows))
    if args.scale is not None and not args.smoke and not failed:
        write_scaled(scaled_section(rows, facts, started, args.scale))
        print(f"\nWrote the scaled section of {RESULTS.relative_to(common.ROOT)} ({minutes:.1f} min).")
    elif not args.smoke and not failed and args.scripts == list(SCRIPTS):
        kept = (
            RESULTS.read_text().split(KEPT, 1)[1]
            if RESULTS.exists() and KEPT in RESULTS.read_text()
            else "\n"
        )
        RESULTS.write_text(markdown(rows, facts, started) + kept)
        print(f"\nWrote {RESULTS.relative_to(common.ROOT)} ({minutes:.1f} min).")
    if failed:
        raise SystemExit(f"FAILED: {', '.join(failed)}")


if __name__ == "__main__":
    main()
