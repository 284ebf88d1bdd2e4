"""What the sandbox knows: its knobs, the gateway's vocabulary, and each message with the JSON about it
(the send answer, status webhooks in every shape seen, the reply)."""

import re
from dataclasses import dataclass, field, fields
from typing import NamedTuple

# Faults that answer without sending, and the ones that send but answer badly.
NOT_SENT_FAULTS = {"rate_limited", "unavailable", "invalid_number", "unauthorized", "device_offline"}
SENT_FAULTS = {"not_json", "drop_response", "stall"}
FAULTS = NOT_SENT_FAULTS | SENT_FAULTS
FAILURE_MESSAGES = {
    "invalid_number": "Invalid number: not registered on WhatsApp",
    "unauthorized": "Unauthorized: invalid token",
    "device_offline": "Device offline: reconnect the device in the dashboard",
}
STATUS_NUMBERS = {"ERROR": 0, "PENDING": 1, "SERVER_ACK": 2, "DELIVERY_ACK": 3, "READ_ACK": 4, "PLAYED": 5}
ACK_SHAPES = ("nested", "nested_numeric", "flat", "flat_ack")
REPLIES = (
    "Hi, interested",
    "Berapa harga?",
    "Can you send more details?",
    "Ok noted, thanks",
    "Nak tahu lebih lanjut",
)
OPT_OUTS = ("STOP", "BERHENTI", "unsubscribe")
PHONE = re.compile(r"^\+?(\d{8,15})$")
# A tracked link of ours in a message: an http(s) URL with /l/ in it, without the punctuation a sentence
# puts after it.
URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
TRAILING = ".,;:!?)]}*~'\""
# Who fetches a link: a person's phone browser, or WhatsApp making the link's preview.
USER_AGENTS = {
    "click": "Mozilla/5.0 (Linux; Android 13; SM-A145F) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36",
    "preview": "WhatsApp/2.24.1 A",
}
CHANCE_KNOBS = ("p_click_if", "p_reply_if")  # {text: probability}, overriding p_click and p_reply


def tracked_links(text: str) -> list[str]:
    """The http(s) URLs of `text` with /l/ in them (our tracked links), in order."""
    urls = (url.rstrip(TRAILING) for url in URL.findall(text))
    return [url for url in urls if "/l/" in url]


@dataclass
class SandboxConfig:
    """Every knob. Delays are seconds; each message draws its own between half and 1.5x."""

    token: str = "sandbox-token"
    seed: int = 0
    latency: float = 0.0  # added to every API answer
    # Progression of a message after it is accepted.
    server_ack_after: float = 1.0
    delivered_after: float = 3.0
    read_after: float = 6.0
    reply_after: float = 12.0
    p_error: float = 0.02  # WhatsApp refuses it (ERROR instead of SERVER_ACK)
    p_delivered: float = 0.9
    p_read: float = 0.75  # of delivered
    p_receipts_off: float = 0.1  # of read: no READ_ACK is ever sent
    p_reply: float = 0.35  # of read
    p_opt_out: float = 0.05  # of replies: the reply is an opt-out word
    drop_rate: float = 0.0  # banned or silently dropped: SERVER_ACK, then nothing (no delivery, no reply)
    # Webhooks.
    webhook_url: str = ""
    webhook_headers: dict = field(default_factory=dict)
    ack_shapes: tuple = ACK_SHAPES
    p_duplicate: float = 0.0  # an event is delivered twice
    shuffle_window: float = 0.0  # each event is delayed by up to this, so events reorder
    p_early_ack: float = 0.0  # SERVER_ACK is posted before the send answer returns
    # Faults drawn per call (fault name -> probability), on top of queued ones.
    fault_rates: dict = field(default_factory=dict)
    retry_after: float = 1.0  # seconds, for rate_limited and unavailable
    stall: float = 30.0  # seconds a stalled answer waits
    p_status_unknown: float = 0.0  # getMessageStatus answers {"success": false, "data": {}}
    # Tracked links (URLs with /l/ in a message): GETs as a person's browser, not following redirects.
    p_click: float = 0.0  # of read messages: the reader clicks each link in turn
    click_after: float = 10.0  # after reading, and between one link and the next
    # {text: probability}: for a message containing the text (the first that matches), instead of
    # p_click or p_reply. How a test makes variant B, with its own words, win.
    p_click_if: dict = field(default_factory=dict)
    p_reply_if: dict = field(default_factory=dict)
    p_link_preview: float = 0.0  # WhatsApp fetches each link for a preview as soon as the send is taken

    def chance(self, knob: str, text: str) -> float:
        """p_click or p_reply for a message with this text: its first matching *_if override, else the knob."""
        return next(
            (p for words, p in getattr(self, f"{knob}_if").items() if words in text), getattr(self, knob)
        )

    def update(self, values: dict) -> None:
        for key, value in values.items():
            current = getattr(self, key, None)
            if not hasattr(self, key):
                raise ValueError(f"unknown knob {key!r}")
            if key == "fault_rates" and not set(value) <= FAULTS:
                raise ValueError(f"fault_rates keys must be among {sorted(FAULTS)}")
            if key in CHANCE_KNOBS:
                value = _chances(key, value)
            if isinstance(current, tuple):
                value = tuple(value)
            elif KNOB_TYPES[key] in (int, float):  # the declared type: latency=0 is still a float
                value = KNOB_TYPES[key](value)
            setattr(self, key, value)


KNOB_TYPES = {knob.name: knob.type for knob in fields(SandboxConfig)}


def _chances(key: str, value) -> dict[str, float]:
    if not isinstance(value, dict) or not all(
        isinstance(p, int | float) and not isinstance(p, bool) and 0 <= p <= 1 for p in value.values()
    ):
        raise ValueError(f'{key} maps texts to probabilities from 0 to 1: {{"Diskaun": 0.9}}')
    return {str(words): float(p) for words, p in value.items()}


class Fetch(NamedTuple):
    """A GET of one of a message's tracked links: a person's click, or a link preview."""

    url: str
    kind: str  # "click" or "preview": the user agent (USER_AGENTS)


@dataclass
class Message:
    id: str
    device: str
    phone: str  # digits, as WhatsApp's JIDs have them
    text: str
    sent_wall: float
    sent_mono: float
    nth: int  # how many sends to this number came before
    timeline: list  # [(seconds after sending, status name)], in order
    reply: tuple | None  # (seconds after sending, text)
    fetches: list = field(default_factory=list)  # [(seconds after sending, Fetch)]: previews, then clicks

    def status_at(self, mono: float) -> tuple[str, float]:
        """The newest status reached by `mono`, and its wall time."""
        status, wall = "PENDING", self.sent_wall
        for offset, name in self.timeline:
            if self.sent_mono + offset <= mono:
                status, wall = name, self.sent_wall + offset
        return status, wall

    def send_answer(self, endpoint: str) -> dict:
        """What sendMessage2 (or the older sendMessage) answers when it takes the message."""
        jid = f"{self.phone}@s.whatsapp.net"
        if endpoint == "sendMessage":  # the older, flat answer
            return {
                "messageId": self.id,
                "id_device": self.device,
                "jid": jid,
                "status": "PENDING",
                "message": self.text,
            }
        return {
            "success": True,
            "message": "Sent Successfully",
            "data": {
                "key": {"remoteJid": jid, "fromMe": True, "id": self.id},
                "message": {"extendedTextMessage": {"text": self.text, "contextInfo": {"expiration": 0}}},
                "messageTimestamp": str(int(self.sent_wall)),
                "status": "PENDING",
            },
            "messageId": self.id,
        }

    def ack(self, status: str, wall: float, shape: str) -> dict:
        """A status webhook in one of the shapes seen (ACK_SHAPES)."""
        number = STATUS_NUMBERS.get(status, status)
        if shape in ("nested", "nested_numeric"):
            return {
                "key": {"remoteJid": f"{self.phone}@s.whatsapp.net", "fromMe": True, "id": self.id},
                "status": number if shape == "nested_numeric" else status,
                "messageTimestamp": str(int(self.sent_wall)),
                "messageC2STimestamp": str(int(wall)),
            }
        if shape == "flat":
            return {"messageId": self.id, "status": status, "timestamp": int(wall)}
        return {"id": self.id, "ack": number, "timestamp": int(wall)}

    def reply_body(self, text: str) -> dict:
        """An incoming-message webhook: the recipient wrote back."""
        return {
            "type": "text",
            "message": text,
            "from": f"{self.phone}@c.us",
            "timestamp": int(self.sent_wall + self.reply[0]),
            "is_forwarded": False,
            "is_broadcast": False,
            "dataReceiver": {"jid": f"{self.device}@s.whatsapp.net", "name": "WSAPME sandbox"},
        }
