"""The product's settings, all of them, with bench/floor.py as the URLconf: for the bench's gunicorn only."""

from blastsite.settings import *  # noqa: F403

ROOT_URLCONF = "bench.floor"
