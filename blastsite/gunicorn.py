"""gunicorn settings: `gunicorn -c python:blastsite.gunicorn blastsite.wsgi`.

Every value can be changed from the environment: PORT (or GUNICORN_BIND), WEB_CONCURRENCY,
GUNICORN_THREADS, GUNICORN_TIMEOUT. Logs go to stdout through the app's formatters, so the
access log is redacted like every other line (the webhook may carry its secret in the URL).
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
# Sync workers, two a core plus one. The web load is CPU-bound Python (bench/webhooks.py: a
# webhook event is about 2.4 ms of worker CPU plus waits on PostgreSQL), so a core needs a second
# worker only to cover those waits; more add context switches and database backends. On 2 cores,
# 3 / 5 / 8 workers took 539 / 553 / 546 events/s: 3 left the cores idle 6% of the time, 8 spent
# more CPU an event. Not gthread: WSAPME opens a new connection per event, so keep-alive buys
# nothing, and threads in one process share one GIL.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
# Import Django and the app once, in the master: a recycled worker is then a fork, not 0.3 s of
# CPU importing everything again while requests queue. New code needs a restart (the Procfile and
# systemd unit restart on deploy), not a HUP.
preload_app = True
# Recycle workers now and then (a slow leak cannot grow forever), but rarely: at 1,000 events/s
# a limit of 2,000 restarted one of 5 workers every 2 s, and the requests queued on it waited
# (bench/webhooks.py: p99 80 ms with 2,000 and no preload, 36 ms with these settings).
max_requests, max_requests_jitter = 20000, 2000
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"()": "blastsite.logs.PlainFormatter"},
        "json": {"()": "blastsite.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": os.environ.get("LOG_FORMAT", "plain"),
            "stream": "ext://sys.stdout",
        }
    },
    "loggers": {
        "gunicorn.error": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
