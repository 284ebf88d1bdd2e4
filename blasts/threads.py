"""Work shared by a few threads, each with its own database connection."""

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from django.db import connection

T = TypeVar("T")


def run_in_threads(work: Callable[[], T], count: int) -> list[T]:
    """Run `work` `count` times at once and return what each returned; an exception in one is raised here.

    Each thread has its own connection, closed when its work ends. With a count of 1 the work runs
    in this thread (and its transaction, if any), as tests expect.
    """
    if count <= 1:
        return [work()]

    def in_thread() -> T:
        try:
            return work()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(in_thread) for _ in range(count)]
    return [future.result() for future in futures]
