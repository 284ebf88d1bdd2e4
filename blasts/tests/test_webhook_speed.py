"""What the webhook's throughput rests on besides its statement count (pinned in test_webhooks.py)."""

import os
import subprocess
import sys

from blastsite import gunicorn

from .test_deploy import PRODUCTION
from .test_settings import ROOT


def test_gunicorn_loads_the_app_in_its_master_without_touching_the_database():
    # preload_app: workers are forked from a master that has imported the app, so a recycled
    # worker starts at once. A connection opened in the master would be one socket shared by
    # every worker; here the database cannot be reached, so trying would fail the import.
    assert gunicorn.preload_app
    env = {k: v for k, v in os.environ.items() if k not in PRODUCTION} | {
        k: v for k, v in PRODUCTION.items() if v is not None
    }
    env |= {
        "ENV_FILE": "/nonexistent",
        "DJANGO_SETTINGS_MODULE": "blastsite.settings",
        "DATABASE_URL": "postgres://blasts@127.0.0.1:9/unreachable",
    }
    script = (
        "from blastsite.wsgi import application; from django.db import connections; "
        "print(sum(c.connection is not None for c in connections.all()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "0"), done.stderr[-2000:]
