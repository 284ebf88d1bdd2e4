import random
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ImproperlyConfigured

from blasts.models import Device
from blasts.sending.pacing import (
    Counters,
    Pacing,
    device_block,
    device_finish_time,
    device_reserve_slot,
    parse_window,
)

KL = ZoneInfo("Asia/Kuala_Lumpur")
# Wednesday 25 November 2026, 10:00 in Kuala Lumpur.
WED_10AM = datetime(2026, 11, 25, 10, 0, tzinfo=KL)


def office_hours(**overrides):
    fields = {"rate_per_minute": 60, "window": (time(9), time(18)), "days": frozenset(range(1, 6)), "tz": KL}
    return Pacing(**{**fields, **overrides})


def test_inside_the_window_sending_may_start_now():
    assert office_hours().open_at(WED_10AM) == WED_10AM


def test_before_the_window_it_waits_for_the_window_to_open():
    assert office_hours().open_at(WED_10AM.replace(hour=7)) == WED_10AM.replace(hour=9)


def test_after_the_window_it_waits_for_the_next_allowed_day():
    friday_evening = datetime(2026, 11, 27, 19, 0, tzinfo=KL)
    assert office_hours().open_at(friday_evening) == datetime(2026, 11, 30, 9, 0, tzinfo=KL)  # Monday


def test_the_window_is_read_in_the_devices_time_zone():
    utc_2am = datetime(2026, 11, 25, 2, 0, tzinfo=ZoneInfo("UTC"))  # 10:00 in Kuala Lumpur
    assert office_hours().open_at(utc_2am) == WED_10AM


def test_no_allowed_day_is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured):
        office_hours(days=frozenset()).open_at(WED_10AM)


@pytest.mark.parametrize(("text", "window"), [("09:00-21:00", (time(9), time(21))), ("", None), (" ", None)])
def test_send_window_setting(text, window):
    assert parse_window(text) == window


@pytest.mark.parametrize("text", ["9-5pm", "21:00-09:00", "09:00"])
def test_a_bad_send_window_setting_is_refused(text):
    with pytest.raises(ImproperlyConfigured):
        parse_window(text)


def test_hourly_cap_moves_the_slot_to_the_next_hour():
    pacing = office_hours(hourly_cap=2)
    slot, counters = pacing.fit(WED_10AM, Counters())
    slot, counters = pacing.fit(slot, counters)
    assert counters.hour_count == 2
    assert pacing.fit(slot, counters)[0] == WED_10AM.replace(hour=11)


def test_daily_cap_moves_the_slot_to_the_next_days_window():
    pacing = office_hours(daily_cap=1)
    slot, counters = pacing.fit(WED_10AM, Counters())
    assert pacing.fit(slot, counters)[0] == datetime(2026, 11, 26, 9, 0, tzinfo=KL)


def test_jitter_spreads_intervals_around_the_mean():
    pacing = Pacing(rate_per_minute=30, jitter=0.3)
    intervals = [pacing.interval(random.Random(seed)) for seed in range(200)]
    assert min(intervals) >= 1.4 and max(intervals) <= 2.6
    assert 1.9 < sum(intervals) / len(intervals) < 2.1
    assert len(set(intervals)) > 150


def test_finish_time_follows_rate_window_and_caps():
    assert Pacing(rate_per_minute=60).finish_time(WED_10AM, 61) == WED_10AM + timedelta(minutes=1)
    # One a minute from Wednesday 10:00 to the window's end at 17:00 is 420; the other 60
    # go on Thursday from 09:00, the last at 09:59.
    pacing = office_hours(rate_per_minute=1, window=(time(9), time(17)), days=frozenset(range(1, 8)))
    assert pacing.finish_time(WED_10AM, 480) == datetime(2026, 11, 26, 9, 59, tzinfo=KL)


def test_finish_time_without_caps_or_window_is_one_step_even_for_a_big_blast(monkeypatch):
    def no_loop(*args):
        raise AssertionError("fit() called: the ETA walked the blast message by message")

    monkeypatch.setattr(Pacing, "fit", no_loop)
    assert Pacing(rate_per_minute=20).finish_time(WED_10AM, 100_000) == WED_10AM + timedelta(
        seconds=3 * 99_999
    )
    assert Pacing(rate_per_minute=0).finish_time(WED_10AM, 100_000) == WED_10AM
    assert Pacing(rate_per_minute=20).finish_time(WED_10AM, 0) == WED_10AM


@pytest.mark.django_db
def test_reserved_slots_are_spaced_by_the_rate(settings):
    settings.SEND_RATE_PER_MINUTE, settings.SEND_JITTER = 60, 0
    now = WED_10AM
    slots = [device_reserve_slot("5850", now=now, max_wait=60, rng=random.Random(1))[0] for _ in range(5)]
    assert [(s - now).total_seconds() for s in slots] == [0, 1, 2, 3, 4]
    assert Device.objects.get(pk="5850").day_count == 5


@pytest.mark.django_db
def test_a_slot_too_far_away_is_not_reserved_and_not_counted(settings):
    settings.SEND_RATE_PER_MINUTE, settings.SEND_JITTER, settings.SEND_DAILY_CAP = 60, 0, 1
    device_reserve_slot("5850", now=WED_10AM, max_wait=60, rng=random.Random(1))
    slot, reserved = device_reserve_slot("5850", now=WED_10AM, max_wait=60, rng=random.Random(1))
    assert not reserved and slot == datetime(2026, 11, 26, 0, 0, tzinfo=KL)
    assert Device.objects.get(pk="5850").day_count == 1


@pytest.mark.django_db
@pytest.mark.parametrize("rate", [0, 60])
def test_retry_after_blocks_the_device_for_every_sender(settings, rate):
    settings.SEND_RATE_PER_MINUTE = rate
    device_block("5850", until=WED_10AM + timedelta(seconds=30))
    device_block("5850", until=WED_10AM + timedelta(seconds=10))  # a shorter wait never shortens it
    slot, reserved = device_reserve_slot("5850", now=WED_10AM, max_wait=60, rng=random.Random(1))
    assert (slot, reserved) == (WED_10AM + timedelta(seconds=30), True)


@pytest.mark.django_db
def test_a_devices_own_pacing_overrides_the_settings(settings):
    settings.SEND_RATE_PER_MINUTE = 60
    Device.objects.create(device_id="5850", rate_per_minute=6, jitter=0)
    assert device_finish_time("5850", start=WED_10AM, count=3) == WED_10AM + timedelta(seconds=20)
