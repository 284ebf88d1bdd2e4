"""The deployment examples run commands that exist, with options they take."""

import re
import shlex

import pytest
from django.core.management import get_commands, load_command_class

from .test_settings import ROOT

FILES = ["Procfile", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "blastsite" / "deploy").iterdir())]


def manage_calls(text: str):
    for match in re.finditer(r"manage\.py ([a-z_]+)((?: --?[a-z-]+(?: [^-&>|\s][^\s&>|]*)?)*)", text):
        yield match.group(1), shlex.split(match.group(2))


@pytest.mark.parametrize("name", FILES)
def test_every_manage_py_command_in_the_deploy_files_exists_and_takes_its_options(name):
    calls = list(manage_calls((ROOT / name).read_text()))
    assert calls or name.endswith(".timer")
    for command, options in calls:
        app = get_commands()[command]  # KeyError: no such command
        parser = load_command_class(app, command).create_parser("manage.py", command)
        parser.parse_args(options)  # SystemExit: an option it does not take


def test_the_web_process_uses_the_gunicorn_settings_module():
    assert "gunicorn -c python:blastsite.gunicorn blastsite.wsgi" in (ROOT / "Procfile").read_text()
    assert (ROOT / "blastsite" / "gunicorn.py").is_file()
