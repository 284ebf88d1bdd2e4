"""gunicorn settings: `gunicorn -c python:blastsite.gunicorn blastsite.wsgi`.

Every value can be changed from the environment: PORT (or GUNICORN_BIND), WEB_CONCURRENCY,
GUNICORN_THREADS, GUNICORN_TIMEOUT. Logs go to stdout through the app's formatters, so the
access log is redacted like every other line (the webhook may carry its secret in the URL).
"""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '8000')}")
# Sync workers: each request is short (the webhook and pages are a few queries).
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
max_requests, max_requests_jitter = 2000, 200  # recycle workers now and then
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
