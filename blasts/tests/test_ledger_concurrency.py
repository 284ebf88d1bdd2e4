"""The ledger under real concurrent writers (threads with their own PostgreSQL connections)."""

import itertools
import random
import threading

import pytest
from django.db import connection

from blasts.models import BlastRecipient, StatusHistory
from blasts.services import recipient_advance

from .conftest import make_blast

Status = BlastRecipient.Status
THREADS = 8
RECIPIENTS = 40
STATUSES = [Status.SERVER_ACK, Status.DELIVERY_ACK, Status.READ_ACK, Status.REPLIED, Status.CLOSED]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_never_regress_and_log_each_applied_change_once():
    blast = make_blast(RECIPIENTS, status=Status.PENDING)
    pks = list(blast.recipients.values_list("pk", flat=True))
    start = threading.Barrier(THREADS)
    applied: list[tuple[int, Status]] = []
    errors: list[BaseException] = []

    def writer(seed):
        rng = random.Random(seed)
        work = [(pk, status) for pk in pks for status in STATUSES]
        rng.shuffle(work)
        try:
            start.wait()
            for pk, status in work:
                if recipient_advance(recipient=pk, status=status, source=StatusHistory.Source.WEBHOOK):
                    applied.append((pk, status))
        except BaseException as exc:  # surfaced below; a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    # Every recipient saw CLOSED from every writer, so all end there.
    assert set(BlastRecipient.objects.filter(blast=blast).values_list("status", flat=True)) == {Status.CLOSED}
    for pk in pks:
        chain = list(
            StatusHistory.objects.filter(recipient_id=pk)
            .exclude(to_status=Status.PENDING)
            .order_by("id")
            .values_list("from_status", "to_status")
        )
        # Each row starts where the previous one ended and goes strictly up: no lost update, no regression.
        assert chain[0][0] == Status.PENDING
        assert all(later[0] == earlier[1] for earlier, later in itertools.pairwise(chain))
        assert all(to_status > from_status for from_status, to_status in chain)
        assert len(chain) == sum(1 for applied_pk, _ in applied if applied_pk == pk)
