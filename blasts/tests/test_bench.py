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
