"""Settings are read from the environment; each case runs in a fresh interpreter."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from django.conf import settings

ROOT = Path(settings.BASE_DIR)
GOOD_KEY = "k" * 20 + "0123456789abcdefghijklmnopqrstuvwxyz"
SHOW = "import json, django; from django.conf import settings as s; django.setup(); print(json.dumps({attr}, default=str))"


def read_settings(attr="s.DATABASES['default']", **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "DATABASE_POOLED", "DEBUG", "SECRET_KEY"}
    }
    clean = {k: v for k, v in clean.items() if not (k in env and env[k] is None)}  # KEY=None removes KEY
    clean.update(ENV_FILE="/nonexistent", DJANGO_SETTINGS_MODULE="blastsite.settings")
    clean.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run(
        [sys.executable, "-c", SHOW.format(attr=attr)], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_without_debug_a_real_secret_key_is_required():
    for key in ["", "short", "django-insecure-" + "x" * 60]:
        result = read_settings(SECRET_KEY=key)
        assert result.returncode != 0
        assert "SECRET_KEY must be set to a random string of at least 50 characters" in result.stderr
        if key:
            assert key not in result.stderr  # the rejected key is not echoed


def test_debug_is_off_unless_set_and_runs_without_a_key_when_on():
    assert json.loads(read_settings("s.DEBUG", SECRET_KEY=GOOD_KEY).stdout) is False
    assert json.loads(read_settings("s.DEBUG", DEBUG="true").stdout) is True


def test_default_database_is_sqlite_in_the_project_with_writers_queued():
    db = json.loads(read_settings(SECRET_KEY=GOOD_KEY).stdout)
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(ROOT / "db.sqlite3")
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_a_neon_pooled_url_works_unchanged():
    url = "postgres://app:s3cret@ep-cool-fog-123-pooler.ap-southeast-1.aws.neon.tech/blasts?sslmode=require"
    db = json.loads(read_settings(SECRET_KEY=GOOD_KEY, DATABASE_URL=url).stdout)
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["HOST"], db["NAME"], db["USER"]) == (
        "ep-cool-fog-123-pooler.ap-southeast-1.aws.neon.tech",
        "blasts",
        "app",
    )
    assert db["OPTIONS"] == {"sslmode": "require", "prepare_threshold": None}  # nothing prepared
    assert db["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert db["CONN_HEALTH_CHECKS"] is True


def test_a_direct_postgres_url_keeps_server_side_cursors_and_prepares_unless_told_it_is_pooled():
    url = "postgresql://postgres@127.0.0.1:5432/blasts"
    direct = json.loads(read_settings(SECRET_KEY=GOOD_KEY, DATABASE_URL=url).stdout)
    assert direct["DISABLE_SERVER_SIDE_CURSORS"] is False
    assert direct["OPTIONS"]["prepare_threshold"] == 0  # blasts/prepared.py's statements, at their first run
    pooled = json.loads(read_settings(SECRET_KEY=GOOD_KEY, DATABASE_URL=url, DATABASE_POOLED="true").stdout)
    assert pooled["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert pooled["OPTIONS"]["prepare_threshold"] is None


def test_env_example_documents_every_variable_settings_read():
    source = (ROOT / "blastsite" / "settings.py").read_text()
    read = set(re.findall(r'env\.\w+\(\s*"([A-Z_]+)"', source))
    documented = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert read and read <= documented


def test_without_debug_the_webhook_secret_is_required():
    result = read_settings(SECRET_KEY=GOOD_KEY, WSAPME_WEBHOOK_SECRETS=None)
    assert result.returncode != 0
    assert "WSAPME_WEBHOOK_SECRETS must be set when DEBUG is off" in result.stderr
    both = read_settings("s.WSAPME_WEBHOOK_SECRETS", SECRET_KEY=GOOD_KEY, WSAPME_WEBHOOK_SECRETS="new,old")
    assert json.loads(both.stdout) == ["new", "old"]
