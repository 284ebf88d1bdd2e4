"""The benchmarks drop and make their database again, so it must never be the one they are given."""

import pytest

from bench.common import bench_database_url


@pytest.mark.parametrize(
    ("given", "smoke", "used"),
    [
        (
            "postgres://postgres@127.0.0.1:5432/blasts",
            False,
            "postgres://postgres@127.0.0.1:5432/blasts_bench",
        ),
        (
            "postgres://postgres@127.0.0.1:5432/blasts",
            True,
            "postgres://postgres@127.0.0.1:5432/blasts_bench_smoke",
        ),
        ("postgres://u:pw@db.example:6543/shop_bench", False, "postgres://u:pw@db.example:6543/shop_bench"),
        (None, False, "postgres://postgres@127.0.0.1:5432/blasts_bench"),
    ],
)
def test_the_benchmarks_use_a_bench_database_beside_the_one_given(given, smoke, used):
    assert bench_database_url(given, smoke=smoke) == used


def test_the_benchmarks_refuse_sqlite():
    with pytest.raises(SystemExit, match="need PostgreSQL"):
        bench_database_url("sqlite:///db.sqlite3", smoke=False)


def test_the_webhook_figures_floors_are_served_by_the_bench_alone(client, db, settings):
    """bench/floor.py's two views answer under the bench's URLconf, and are not the product's URLs."""
    assert client.post("/bench/floor/bare").status_code == 404
    settings.ROOT_URLCONF = "bench.floor"
    assert client.post("/bench/floor/bare").status_code == 200
    assert client.post("/bench/floor/insert", b"{}", content_type="application/json").status_code == 200
