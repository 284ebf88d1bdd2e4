"""Per-device pacing: a rate with jitter, hourly and daily caps, a sending window and weekdays.

Every sender process on every host reserves its next send slot on the device's row, under
the row's lock, so the device's rate holds whatever the number of senders. The same rules
give the ETA.
"""

import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from ..models import Device

UTC_ZONE = ZoneInfo("UTC")


@dataclass(frozen=True)
class Counters:
    """Sends already counted in the device's current clock hour and day (local time)."""

    hour_start: datetime | None = None
    hour_count: int = 0
    day: date | None = None
    day_count: int = 0


def parse_window(text: str) -> tuple[time, time] | None:
    """ "09:00-21:00" -> (09:00, 21:00); "" -> None (any time)."""
    if not text.strip():
        return None
    try:
        start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError:
        raise ImproperlyConfigured(f"SEND_WINDOW {text!r} is not HH:MM-HH:MM") from None
    if start >= end:
        raise ImproperlyConfigured(f"SEND_WINDOW {text!r} must start before it ends (same day)")
    return start, end


@dataclass(frozen=True)
class Pacing:
    rate_per_minute: float
    jitter: float = 0.0
    hourly_cap: int | None = None
    daily_cap: int | None = None
    window: tuple[time, time] | None = None
    days: frozenset[int] = frozenset(range(1, 8))
    tz: ZoneInfo = UTC_ZONE

    @classmethod
    def for_device(cls, device: Device) -> "Pacing":
        """The device's own values, each falling back to its SEND_* setting."""

        def pick(value, default):
            return default if value is None or value == "" else value

        window = (
            (device.window_start, device.window_end) if device.window_start and device.window_end else None
        )
        return cls(
            rate_per_minute=pick(device.rate_per_minute, settings.SEND_RATE_PER_MINUTE),
            jitter=pick(device.jitter, settings.SEND_JITTER),
            hourly_cap=pick(device.hourly_cap, settings.SEND_HOURLY_CAP),
            daily_cap=pick(device.daily_cap, settings.SEND_DAILY_CAP),
            window=window or parse_window(settings.SEND_WINDOW),
            days=frozenset(int(d) for d in pick(device.days, settings.SEND_DAYS)),
            tz=ZoneInfo(pick(device.time_zone, settings.SEND_TIME_ZONE)),
        )

    @property
    def unlimited_but_rate(self) -> bool:
        """No cap, window or day off: only the rate spaces the sends."""
        return (
            self.hourly_cap is None and self.daily_cap is None and self.window is None and len(self.days) == 7
        )

    @property
    def unlimited(self) -> bool:
        return not self.rate_per_minute and self.unlimited_but_rate

    @property
    def mean_interval(self) -> float:
        return 60.0 / self.rate_per_minute if self.rate_per_minute else 0.0

    def interval(self, rng: random.Random) -> float:
        """Seconds to the next slot: the mean interval times a random factor in 1 ± jitter."""
        return self.mean_interval * rng.uniform(1 - self.jitter, 1 + self.jitter)

    def open_at(self, t: datetime) -> datetime:
        """The earliest instant at or after `t` on an allowed weekday, inside the window."""
        local = t.astimezone(self.tz)
        for _ in range(8):
            if local.isoweekday() in self.days:
                if self.window is None:
                    return local
                start, end = (datetime.combine(local.date(), bound, self.tz) for bound in self.window)
                if local < start:
                    return start
                if local < end:
                    return local
            local = datetime.combine(local.date() + timedelta(days=1), time(0), self.tz)
        raise ImproperlyConfigured("No sending weekday is allowed (SEND_DAYS or the device's days).")

    def fit(self, t: datetime, counters: Counters) -> tuple[datetime, Counters]:
        """The first slot at or after `t` that the window and the caps allow, and the counters after it."""
        for _ in range(24 * 8 + 8):
            t = self.open_at(t)
            hour = t.replace(minute=0, second=0, microsecond=0)
            hour_count = counters.hour_count if counters.hour_start == hour else 0
            day_count = counters.day_count if counters.day == t.date() else 0
            if self.daily_cap is not None and day_count >= self.daily_cap:
                t = datetime.combine(t.date() + timedelta(days=1), time(0), self.tz)
            elif self.hourly_cap is not None and hour_count >= self.hourly_cap:
                t = hour + timedelta(hours=1)
            else:
                return t, Counters(hour, hour_count + 1, t.date(), day_count + 1)
        raise ImproperlyConfigured("The caps allow no send in the next week (a cap of 0?).")

    def finish_time(self, start: datetime, count: int, counters: Counters = Counters()) -> datetime:
        """When the last of `count` messages would go, sending from `start` at the mean rate."""
        if count and self.unlimited_but_rate:  # the default: one step, not a loop over a big blast
            return start + timedelta(seconds=self.mean_interval * (count - 1))
        t = start
        for _ in range(count):
            slot, counters = self.fit(t, counters)
            t = slot + timedelta(seconds=self.mean_interval)
        return t if not count else slot


def _counters(device: Device) -> Counters:
    return Counters(device.hour_start, device.hour_count, device.day, device.day_count)


def device_get(device_id: str) -> Device:
    """The device's row, made on first use: for writes (reserving a slot, a Retry-After block)."""
    return Device.objects.get_or_create(device_id=device_id)[0]


def device_read(device_id: str) -> Device:
    """The device's row for reading, unsaved with the defaults when it has none yet: reads never write."""
    return Device.objects.filter(pk=device_id).first() or Device(device_id=device_id)


def device_reserve_slot(
    device_id: str, *, now: datetime, max_wait: float, rng: random.Random, device: Device | None = None
) -> tuple[datetime, bool]:
    """Reserve the device's next send slot for one message; return (slot, reserved).

    Not reserved (and nothing counted) when the slot is more than `max_wait` seconds away:
    the window is closed, a cap is reached, or the gateway asked us to wait (Retry-After).
    `device`: its row as the caller just read it (send_one reads it with the recipient), saving a read
    when pacing is off; a paced reservation reads it again under its lock.
    """
    device = device or device_get(device_id)
    pacing = Pacing.for_device(device)
    if pacing.unlimited:
        slot = max(now, device.blocked_until or now)
        return slot, (slot - now).total_seconds() <= max_wait
    with transaction.atomic():
        device = Device.objects.select_for_update().get(pk=device_id)
        start = max(t for t in (now, device.next_slot_at, device.blocked_until) if t is not None)
        slot, counters = pacing.fit(start, _counters(device))
        if (slot - now).total_seconds() > max_wait:
            return slot, False
        device.next_slot_at = slot + timedelta(seconds=pacing.interval(rng))
        device.hour_start, device.hour_count, device.day, device.day_count = (
            counters.hour_start,
            counters.hour_count,
            counters.day,
            counters.day_count,
        )
        device.save(update_fields=["next_slot_at", "hour_start", "hour_count", "day", "day_count"])
    return slot, True


def device_block(device_id: str, *, until: datetime) -> None:
    """Honour the gateway's Retry-After: no sender uses the device before `until`."""
    device_get(device_id)
    with transaction.atomic():
        device = Device.objects.select_for_update().get(pk=device_id)
        if device.blocked_until is None or device.blocked_until < until:
            device.blocked_until = until
            device.save(update_fields=["blocked_until"])


def device_finish_time(device_id: str, *, start: datetime, count: int) -> datetime:
    """When `count` more messages through the device would be sent, starting no earlier than `start`."""
    device = device_read(device_id)
    pacing = Pacing.for_device(device)
    begin = max(t for t in (start, device.next_slot_at, device.blocked_until) if t is not None)
    return pacing.finish_time(begin, count, _counters(device))
