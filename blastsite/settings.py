"""Settings for blastsite, read from the environment (and `.env`, if present).

Every variable is documented in `.env.example`.
"""

import os
import tempfile
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
ENV_FILE = Path(env.str("ENV_FILE", default=str(BASE_DIR / ".env")))
if ENV_FILE.is_file():
    # Real environment variables win over the file (read_env uses setdefault).
    env.read_env(ENV_FILE)

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
_weak_key = len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-")
if _weak_key:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set to a random string of at least 50 characters when DEBUG is off."
        )
    SECRET_KEY = SECRET_KEY or "django-insecure-local-development-only-never-in-production"

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# HTTPS (on unless DEBUG): redirect plain HTTP, cookies only over HTTPS, HSTS for a year.
HTTPS = env.bool("HTTPS", default=not DEBUG)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
CSRF_COOKIE_HTTPONLY = True  # pages send the token from the template, never from JavaScript
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Behind a proxy that ends TLS (nginx, a load balancer) and sets X-Forwarded-Proto.
if env.bool("TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Checks `manage.py check --deploy` may skip, each with its reason:
SILENCED_SYSTEM_CHECKS = (
    []
    if SECURE_HSTS_PRELOAD
    else [
        # HSTS preload commits the whole domain, subdomains too, to HTTPS in browsers' built-in lists
        # (hstspreload.org): the domain's owner opts in with SECURE_HSTS_PRELOAD=true, not this app.
        "security.W021",
    ]
)

# The admin's address: /admin/ while developing; in production it must be set, and not to admin/.
ADMIN_PATH = env.str("ADMIN_PATH", default="admin/" if DEBUG else "").strip("/") + "/"
if not DEBUG and ADMIN_PATH in ("/", "admin/"):
    raise ImproperlyConfigured(
        "ADMIN_PATH must be set when DEBUG is off, and not to admin/ (e.g. ADMIN_PATH=backoffice-7f3k/)."
    )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
    "blasts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out sign-in into its 429 page
]

# Sign-ins: after LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that
# pair is locked out for LOGIN_LOCKOUT_MINUTES (django-axes); a staff user can unlock in the admin.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_LOCKOUT_MINUTES", default=30))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "blasts/locked_out.html"

ROOT_URLCONF = "blastsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "blasts.context_processors.gateway",
                "blasts.context_processors.access",
            ],
        },
    },
]

WSGI_APPLICATION = "blastsite.wsgi.application"
# The pages have a sign-in of their own: sending people to the admin's would show its secret path
# to anyone. The admin keeps its sign-in at ADMIN_PATH; django-axes guards both.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "blast-list"
LOGOUT_REDIRECT_URL = "login"


# Database: SQLite in the project folder unless DATABASE_URL says otherwise.
DATABASE_POOLED = False
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db.setdefault("OPTIONS", {}).update(
        {
            # Take the write lock at BEGIN so concurrent writers queue instead of
            # failing half-way through a transaction.
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # Tests use a file too, not shared-cache memory, so threads and the live server lock as in
    # production; one per process, so two test runs never share it.
    _db.setdefault("TEST", {"NAME": str(Path(tempfile.gettempdir()) / f"blasts-test-{os.getpid()}.sqlite3")})
elif _db["ENGINE"] == "django.db.backends.postgresql":
    _db["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    _db["CONN_HEALTH_CHECKS"] = True
    # Transaction-mode poolers (Neon's "-pooler" hosts, PgBouncer) cannot keep
    # server-side cursors open across transactions.
    _db["DISABLE_SERVER_SIDE_CURSORS"] = DATABASE_POOLED = env.bool(
        "DATABASE_POOLED", default="-pooler" in (_db.get("HOST") or "")
    )
    # blasts/prepared.py's statements are prepared at their first run on a connection (Django's own
    # bind client-side and never are); behind a pooler none is, as the next connection would not know it.
    _db.setdefault("OPTIONS", {})["prepare_threshold"] = None if DATABASE_POOLED else 0
# Behind a transaction pooler the applier (apply_events) cannot LISTEN: a direct connection lets it.
DATABASE_DIRECT_URL = env.str("DATABASE_DIRECT_URL", default="")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="Asia/Kuala_Lumpur")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
# Served by WhiteNoise from STATIC_ROOT (`manage.py collectstatic`): compressed, with hashed
# names cached for a year. While developing (or STATIC_MANIFEST=false) files are served as they are.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env.bool("STATIC_MANIFEST", default=not DEBUG)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

REST_FRAMEWORK = {
    # Token first, so an anonymous request is told how to authenticate (401, WWW-Authenticate: Token).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "WhatsApp blasts API",
    "DESCRIPTION": "Blasts sent through WSAPME and their funnel: sent, received, read, replied, closed.",
    "VERSION": "1.0.0",
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    "SWAGGER_UI_DIST": "SIDECAR",  # served from the installed package: no CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "RecipientStatusEnum": "blasts.serializers.STATUS_NAMES",
        "StatusNumberEnum": "blasts.models.BlastRecipient.Status",
        "BlastStateEnum": "blasts.models.Blast.State",
        "TestMetricEnum": "blasts.models.VariantTest.Metric",
    },
}

# One line per send, poll and webhook with the blast and recipient ids (blastsite/logs.py);
# LOG_FORMAT=json for a log collector. Secrets are replaced with [redacted] in every line.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"()": "blastsite.logs.PlainFormatter"},
        "json": {"()": "blastsite.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}


# Blasts
PHONE_DEFAULT_REGION = env.str("PHONE_DEFAULT_REGION", default="MY")
BLAST_MAX_RECIPIENTS = env.int("BLAST_MAX_RECIPIENTS", default=1000)
# The team's own phones, added to every blast at its first, middle and last positions: their
# delivery shows the device really sends. Left out of every rate. Checked by `manage.py check`.
CANARY_PHONES = env.list("CANARY_PHONES", default=[])

# WSAPME. Without a token the product runs in sandbox mode: it talks to the local
# sandbox gateway (manage.py wsapme_sandbox), and no real WhatsApp message is sent.
WSAPME_TOKEN = env.str("WSAPME_TOKEN", default="")
WSAPME_SANDBOX = env.bool("WSAPME_SANDBOX", default=DEBUG and not WSAPME_TOKEN)
if not (WSAPME_TOKEN or WSAPME_SANDBOX):
    raise ImproperlyConfigured(
        "WSAPME_TOKEN must be set when DEBUG is off (or WSAPME_SANDBOX=true: the local sandbox, no real message)."
    )
WSAPME_SANDBOX_TOKEN = "sandbox-token"  # what the local sandbox accepts; not a secret
WSAPME_SANDBOX_PORT = env.int("WSAPME_SANDBOX_PORT", default=8900)
WSAPME_BASE_URL = env.str(
    "WSAPME_BASE_URL",
    default=f"http://127.0.0.1:{WSAPME_SANDBOX_PORT}" if WSAPME_SANDBOX else "https://api.wsapme.com",
)
WSAPME_DEVICE = env.str("WSAPME_DEVICE", default="sandbox" if WSAPME_SANDBOX else "")
# Where the sandbox posts its webhooks: this site's webhook endpoint.
WSAPME_SANDBOX_WEBHOOK_URL = env.str(
    "WSAPME_SANDBOX_WEBHOOK_URL", default="http://127.0.0.1:8000/api/webhook/wsapme"
)
WSAPME_CONNECT_TIMEOUT = env.float("WSAPME_CONNECT_TIMEOUT", default=5.0)
WSAPME_READ_TIMEOUT = env.float("WSAPME_READ_TIMEOUT", default=20.0)

# Sending. Pacing is per WSAPME device; the Device rows in the admin override these.
SEND_RATE_PER_MINUTE = env.float("SEND_RATE_PER_MINUTE", default=20.0)
SEND_JITTER = env.float("SEND_JITTER", default=0.3)
SEND_HOURLY_CAP = env.int("SEND_HOURLY_CAP", default=None)
SEND_DAILY_CAP = env.int("SEND_DAILY_CAP", default=None)
SEND_WINDOW = env.str("SEND_WINDOW", default="")  # e.g. "09:00-21:00"; empty: any time
SEND_DAYS = env.str("SEND_DAYS", default="1234567")  # ISO weekdays, 1 = Monday
SEND_TIME_ZONE = env.str("SEND_TIME_ZONE", default="Asia/Kuala_Lumpur")
SEND_BATCH_SIZE = env.int("SEND_BATCH_SIZE", default=20)
SEND_LEASE_SECONDS = env.float("SEND_LEASE_SECONDS", default=60.0)
SEND_MAX_ATTEMPTS = env.int("SEND_MAX_ATTEMPTS", default=6)
SEND_BACKOFF_CAP_SECONDS = env.float("SEND_BACKOFF_CAP_SECONDS", default=300.0)
BLAST_STALE_AFTER_HOURS = env.float("BLAST_STALE_AFTER_HOURS", default=6.0)
FREQUENCY_CAP_DAYS = env.float("FREQUENCY_CAP_DAYS", default=0.0)  # 0: off
# The delivery-health breaker pauses a blast when, of its most recent WINDOW sends at least WAIT
# seconds old, too few were delivered within WAIT or too many came back ERROR. WINDOW 0: off.
DELIVERY_HEALTH_WINDOW = env.int("DELIVERY_HEALTH_WINDOW", default=30)
DELIVERY_HEALTH_MIN_SAMPLE = env.int("DELIVERY_HEALTH_MIN_SAMPLE", default=20)
DELIVERY_HEALTH_WAIT = env.float("DELIVERY_HEALTH_WAIT", default=600.0)
DELIVERY_HEALTH_MIN_RATE = env.float("DELIVERY_HEALTH_MIN_RATE", default=0.5)
DELIVERY_HEALTH_MAX_ERROR_RATE = env.float("DELIVERY_HEALTH_MAX_ERROR_RATE", default=0.2)
DELIVERY_HEALTH_CHECK_SECONDS = env.float("DELIVERY_HEALTH_CHECK_SECONDS", default=30.0)

# Tracked links: a message's http(s) links go out as PUBLIC_BASE_URL/l/<code> (this site, as
# recipients' phones reach it), and lead to the original for LINK_EXPIRY_DAYS after sending.
# Empty: links go out as written (`manage.py check --deploy` says so).
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="http://127.0.0.1:8000" if DEBUG else "").rstrip("/")
# manage.py serve_links, the redirect on a server of its own: where it listens, its processes (0: one
# a core) and each process's connections to the database.
LINKS_BIND = env.str("LINKS_BIND", default="127.0.0.1:8001")
LINKS_WORKERS = env.int("LINKS_WORKERS", default=0)
LINKS_DATABASE_CONNECTIONS = env.int("LINKS_DATABASE_CONNECTIONS", default=4)
LINK_EXPIRY_DAYS = env.float("LINK_EXPIRY_DAYS", default=90.0)
# A request for a link this soon after its send is the gateway's or WhatsApp's link preview, not a person.
LINK_PREVIEW_SECONDS = env.float("LINK_PREVIEW_SECONDS", default=10.0)

# Status tracking. WSAPME cannot sign its callbacks, so the webhook checks a secret of ours
# (header X-Webhook-Token, HTTP Basic password, or ?token=). Two may be live while rotating.
# "a, b" is two secrets, "a" and "b": a space kept in one would turn away requests that carry it,
# and the log redaction would look for it with the space.
WSAPME_WEBHOOK_SECRETS = [s.strip() for s in env.list("WSAPME_WEBHOOK_SECRETS", default=[]) if s.strip()]
if not WSAPME_WEBHOOK_SECRETS and not DEBUG:
    raise ImproperlyConfigured("WSAPME_WEBHOOK_SECRETS must be set when DEBUG is off (the webhook's secret).")
WEBHOOK_MAX_BYTES = env.int("WEBHOOK_MAX_BYTES", default=64 * 1024)
REPLY_ATTRIBUTION_HOURS = env.float("REPLY_ATTRIBUTION_HOURS", default=72.0)
OPT_OUT_WORDS = env.list(
    "OPT_OUT_WORDS", default=["STOP", "UNSUBSCRIBE", "UNSUB", "BERHENTI", "OPT OUT", "STOP ALL"]
)
UNKNOWN_MATCH_MINUTES = env.float("UNKNOWN_MATCH_MINUTES", default=30.0)
POLL_CONCURRENCY = env.int("POLL_CONCURRENCY", default=4)
POLL_RATE_PER_SECOND = env.float("POLL_RATE_PER_SECOND", default=10.0)

# Team access: the audit trail is kept this long by prune_records; alerts go by email (to the blast's
# creator and ALERT_EMAILS) and to ALERT_WEBHOOK_URL (Slack or Google Chat incoming webhook, a secret).
AUDIT_KEEP_DAYS = env.int("AUDIT_KEEP_DAYS", default=730)
ALERT_EMAILS = [address.strip() for address in env.list("ALERT_EMAILS", default=[]) if address.strip()]
ALERT_WEBHOOK_URL = env.str("ALERT_WEBHOOK_URL", default="")
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))  # EMAIL_BACKEND, EMAIL_HOST, ...
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="blasts@localhost")
