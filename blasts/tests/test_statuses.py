import pytest

from blasts.models import BlastRecipient
from blasts.statuses import can_move, status_from_gateway

Status = BlastRecipient.Status


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ERROR", Status.FAILED),
        (0, Status.FAILED),
        ("PENDING", Status.PENDING),
        (1, Status.PENDING),
        ("SERVER_ACK", Status.SERVER_ACK),
        ("2", Status.SERVER_ACK),
        ("DELIVERY_ACK", Status.DELIVERY_ACK),
        (3, Status.DELIVERY_ACK),
        ("READ", Status.READ_ACK),
        ("READ_ACK", Status.READ_ACK),
        ("read_ack", Status.READ_ACK),
        (4, Status.READ_ACK),
        ("PLAYED", Status.READ_ACK),
        (5, Status.READ_ACK),
        (" delivery_ack ", Status.DELIVERY_ACK),
        ("REPLIED", Status.REPLIED),
        ("CLOSED", Status.CLOSED),
    ],
)
def test_gateway_names_and_numbers_map_to_our_statuses(value, expected):
    assert status_from_gateway(value) == expected


@pytest.mark.parametrize("value", ["DELIVERED_SOMEHOW", 6, -1, None, True, "", 3.5, {"status": 3}])
def test_unknown_gateway_values_map_to_nothing_and_are_logged(value, caplog):
    assert status_from_gateway(value) is None
    assert "unknown gateway status" in caplog.text


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (Status.QUEUED, Status.PENDING, True),
        (Status.PENDING, Status.PENDING, False),
        (Status.READ_ACK, Status.DELIVERY_ACK, False),
        (Status.SERVER_ACK, Status.REPLIED, True),
        (Status.REPLIED, Status.CLOSED, True),
        (Status.CLOSED, Status.REPLIED, False),
        # ERROR: a failure before delivery; ignored once the phone had the message.
        (Status.SERVER_ACK, Status.FAILED, True),
        (Status.DELIVERY_ACK, Status.FAILED, False),
        (Status.FAILED, Status.FAILED, False),
        (Status.FAILED, Status.SERVER_ACK, False),
        (Status.FAILED, Status.DELIVERY_ACK, True),
        # Sending bookkeeping.
        (Status.QUEUED, Status.SENDING, True),
        (Status.SENDING, Status.UNKNOWN, True),
        (Status.PENDING, Status.UNKNOWN, False),
        (Status.UNKNOWN, Status.SERVER_ACK, True),
        (Status.QUEUED, Status.SKIPPED, True),
        (Status.SKIPPED, Status.REPLIED, False),
        (Status.PENDING, Status.QUEUED, False),
    ],
)
def test_forward_only_rule(current, new, allowed):
    assert can_move(current, new) is allowed
