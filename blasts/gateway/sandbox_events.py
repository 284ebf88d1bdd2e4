"""The sandbox's outgoing requests: each message's webhooks (acks, replies) posted to the site, and its
tracked links fetched as WhatsApp's link preview and as a reader's clicks, each at its time on the
message's timeline (one thread delivers them in order; Sandbox runs it)."""

import heapq
import logging
import random
import threading
import time
from datetime import UTC, datetime

import requests

from .sandbox_messages import USER_AGENTS, Fetch, Message, tracked_links

log = logging.getLogger(__name__)


class Deliveries:
    """Sandbox's half that calls out. Uses the Sandbox's config, lock, event heap and lists."""

    lock: threading.Lock

    @staticmethod
    def _clicks(config, key: str, text: str, read_at: float) -> list[tuple[float, Fetch]]:
        """A reader's clicks on the message's tracked links, one after another, drawn on their own."""
        rng = random.Random(f"{key}:click")
        links = tracked_links(text)
        if not links or rng.random() >= config.chance("p_click", text):
            return []
        clicks, at = [], read_at
        for url in links:
            at += rng.uniform(0.5, 1.5) * config.click_after
            clicks.append((at, Fetch(url, "click")))
        return clicks

    def _schedule(self, message: Message, *, early_ack: bool) -> None:
        config = self.config
        if message.fetches:
            with self._events_ready:
                for offset, fetch in message.fetches:
                    heapq.heappush(
                        self._events, (message.sent_mono + offset, next(self._seq), fetch, message.id)
                    )
                self._events_ready.notify()
        if not config.webhook_url:
            return
        rng = self._rng(message, "webhooks")
        events = []
        for offset, status in message.timeline:
            events.append(
                (offset, message.ack(status, message.sent_wall + offset, rng.choice(config.ack_shapes)))
            )
        if message.reply:
            offset, text = message.reply
            events.append((offset, message.reply_body(text)))
        if early_ack:
            payload = message.ack("SERVER_ACK", message.sent_wall, rng.choice(config.ack_shapes))
            self._post(payload, message.id)  # before the send answer is written
        with self._events_ready:
            for offset, payload in events:
                copies = 2 if rng.random() < config.p_duplicate else 1
                for _ in range(copies):
                    due = message.sent_mono + offset + rng.uniform(0, config.shuffle_window)
                    heapq.heappush(self._events, (due, next(self._seq), payload, message.id))
            self._events_ready.notify()

    def _deliver_events(self) -> None:
        while not self._stopping.is_set():
            with self._events_ready:
                now = time.monotonic()
                if not self._events or self._events[0][0] > now:
                    wait = self._events[0][0] - now if self._events else 0.5
                    self._events_ready.wait(timeout=min(wait, 0.5))
                    continue
                _, _, payload, message_id = heapq.heappop(self._events)
            if isinstance(payload, Fetch):
                self._fetch(payload, message_id)
            else:
                self._post(payload, message_id)

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _fetch(self, fetch: Fetch, message_id: str) -> None:
        """GET a tracked link as a phone would, stopping at its redirect; kept in /_sandbox/clicks."""
        entry = {
            "message_id": message_id,
            "url": fetch.url,
            "preview": fetch.kind == "preview",
            "user_agent": USER_AGENTS[fetch.kind],
            "at": datetime.now(UTC).isoformat(),
        }
        try:
            response = self._session().get(
                fetch.url, headers={"User-Agent": USER_AGENTS[fetch.kind]}, allow_redirects=False, timeout=10
            )
            entry.update(http_status=response.status_code, location=response.headers.get("Location"))
        except requests.RequestException as exc:
            entry["error"] = type(exc).__name__
            log.warning(
                "sandbox %s of %s failed: %s", fetch.kind, fetch.url.split("?")[0], type(exc).__name__
            )
        with self.lock:
            self.fetches.append(entry)

    def _post(self, payload: dict, message_id: str) -> None:
        entry = {"message_id": message_id, "payload": payload, "at": datetime.now(UTC).isoformat()}
        try:
            response = self._session().post(
                self.config.webhook_url, json=payload, headers=self.config.webhook_headers, timeout=10
            )
            entry["http_status"] = response.status_code
        except requests.RequestException as exc:
            entry["error"] = type(exc).__name__
            log.warning(
                "sandbox webhook to %s failed: %s", self.config.webhook_url.split("?")[0], type(exc).__name__
            )
        with self.lock:
            self.deliveries.append(entry)
