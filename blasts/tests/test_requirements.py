"""The pinned files match their inputs: `make requirements` was run after the last edit of a .in file.

requirements.in / requirements-dev.in say what we depend on; requirements.txt / requirements-dev.txt
(pip-tools) pin every package with its hashes, and installs take nothing else (--require-hashes).
"""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")


def inputs(name: str) -> dict[str, Requirement]:
    """The requirements a .in file names itself (its -r/-c lines are other files)."""
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def compiled(name: str) -> dict[str, tuple[str, list[str], list[str]]]:
    """name -> (version, its hashes, the `# via` sources) of a pip-compile output."""
    pins, current = {}, None
    for line in (ROOT / name).read_text().splitlines():
        if match := PIN.match(line):
            current = canonicalize_name(match[1])
            pins[current] = (match[2], [], [])
        elif current and line.strip().startswith("--hash=sha256:"):
            pins[current][1].append(line.strip())
        elif current and line.strip().startswith("#") and line.strip() not in ("#", "# via"):
            pins[current][2].append(
                re.sub(r"^#\s*(via\s*)?", "", line.strip())
            )  # "-r requirements.in", "django"
    return pins


@pytest.mark.parametrize("name", ["requirements", "requirements-dev"])
def test_every_package_is_pinned_with_hashes(name):
    pins = compiled(f"{name}.txt")
    assert pins
    assert all(hashes for _, hashes, _ in pins.values()), [p for p, (_, h, _) in pins.items() if not h]
    assert "--find-links" not in (ROOT / f"{name}.txt").read_text()  # nothing of this machine's pip setup


@pytest.mark.parametrize(
    ("source", "output"),
    [("requirements.in", "requirements.txt"), ("requirements-dev.in", "requirements-dev.txt")],
)
def test_each_input_is_pinned_in_its_compiled_file_and_nothing_it_dropped_stays(source, output):
    wanted, pins = inputs(source), compiled(output)
    for name, requirement in wanted.items():
        assert name in pins, f"{requirement} is in {source} but not in {output}: run make requirements"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (requirement, pins[name][0])
    for name, (_, _, via) in pins.items():
        if f"-r {source}" in via and name not in wanted:
            pytest.fail(f"{name} is pinned for {source}, which no longer names it: run make requirements")


def test_production_is_part_of_dev_at_the_same_versions():
    production, dev = compiled("requirements.txt"), compiled("requirements-dev.txt")
    assert {name: pin[0] for name, pin in production.items()} == {
        name: dev[name][0] for name in production if name in dev
    }
    assert set(production) <= set(dev)


def test_the_tests_and_tools_stay_out_of_production():
    assert not {"pytest", "hypothesis", "schemathesis", "playwright", "ruff", "responses"} & set(
        compiled("requirements.txt")
    )
