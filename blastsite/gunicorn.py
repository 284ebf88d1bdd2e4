"""gunicorn settings: `gunicorn -c python:blastsite.gunicorn blastsite.wsgi`.

Every value can be changed from the environment: PORT (or GUNICORN_BIND), WEB_CONCURRENCY,
GUNICORN_THREADS, GUNICORN_TIMEOUT. Logs go to stdout through the app's formatters, so the
access log is redacted like every other line (the webhook may carry its secret in the URL).
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
# Workers: two a core plus one. The web load is CPU-bound Python (bench/webhooks.py: a webhook
# event is about 2.4 ms of worker CPU plus waits on PostgreSQL), so a core needs a second process
# only to cover those waits; more add context switches and database backends. On 2 cores, 3 / 5 / 8
# sync workers took 539 / 553 / 546 events/s.
# Threads are for slow clients, not speed (a process's threads share one GIL). gunicorn has no
# header or body read timeout: whoever reads a request sent a byte at a time is held until it
# ends. A sync worker is held whole: six such clients left /healthz unanswered for 20 s. A gthread
# worker loses one thread: on 2 cores (5 workers x 8 threads), 30 slow clients left /healthz
# answering in 10 ms. worker_connections = threads makes a worker with no free thread stop
# accepting, so a request waits for one that has a free thread instead of queueing behind slow
# clients (without it, those 30 still stalled /healthz for 5 s). Still one thread per slow client,
# and 5 s per silent connection (gthread's wait for a first byte): 50 slow clients stalled it
# until they left. Hence the buffering proxy the README requires in front. No keep-alive, as with
# sync workers: WSAPME opens a connection per event. Each thread keeps its own database connection
# (CONN_MAX_AGE), so the database may see up to workers x threads of them. The price, measured with
# bench/webhooks.py (16 connections, two runs each, alternating, same machine): sync 531 / 527
# events/s with p99 37 / 40 ms, gthread 461 / 475 events/s with p99 70 / 70 ms (gthread's poller and
# hand-off to a thread cost about 0.3 ms of CPU an event).
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
worker_connections = threads
keepalive = 0
# For gthread workers the timeout restarts a worker whose main loop hangs; it cuts off no request.
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
