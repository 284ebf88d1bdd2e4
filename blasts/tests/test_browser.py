"""The marketers' pages in a real browser: Playwright for Python driving Debian's Chromium.

Sign in, create a blast, send it to the sandbox (the applier applying its webhooks, as in production)
and watch the funnel fill in without a reload, filter the list, export a CSV, and use the pages at
phone width; test two variants with a tracked link that the sandbox's readers click. Screenshots go to <project root>/test-artifacts/ (gitignored; CI keeps them as artifacts).

Skipped when Chromium (/usr/bin/chromium) or the playwright package is missing.
"""

import contextlib
import csv
import importlib.util
import io
import os
import re
import threading
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from blasts.audit import SYSTEM
from blasts.gateway.client import get_client
from blasts.models import Blast, BlastRecipient, Click, Contact, Segment
from blasts.opt_outs.services import opt_out_add
from blasts.reporting.exports import CSV_FIELDS
from blasts.segments.rules import rules_clean
from blasts.sending.worker import send_due

from .conftest import make_blast

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None:
    pytest.skip(
        "browser tests need Debian's Chromium at /usr/bin/chromium and the playwright package",
        allow_module_level=True,
    )

from playwright.sync_api import expect, sync_playwright  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PASSWORD = "pw-browser-tests-7f3k"
Status = BlastRecipient.Status

# The funnel table in the live section, as {"Sent": 3, "Received": 1, ...}.
READ_FUNNEL = """() => {
  const rows = document.querySelectorAll("#live .funnel table tbody tr");
  return Object.fromEntries([...rows].map(r => [
    r.querySelector("th").textContent.trim(), Number(r.querySelector("td").textContent.trim())]));
}"""


@pytest.fixture(scope="module", autouse=True)
def allow_db_calls_beside_playwright():
    """Playwright's sync API runs an event loop in this thread; Django would refuse ORM calls here
    (the tests' own and the database flush after each), for as long as the browser is open."""
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if before is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


@pytest.fixture(scope="module")
def browser(allow_db_calls_beside_playwright):
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser):
    """Pages in fresh browser contexts; a JavaScript error or a failed request on them fails the test."""
    contexts, errors = [], []

    def open_page(**options):
        context = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **options})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.dialogs, page.answer = [], True  # every confirm() the page asked; answered yes unless told
        page.on(
            "dialog",
            lambda dialog: (
                page.dialogs.append(dialog.message),
                dialog.accept() if page.answer else dialog.dismiss(),
            ),
        )
        page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
        page.on(
            "response",
            lambda response: (
                response.status >= 400
                and not response.url.endswith("/favicon.ico")  # there is none; browsers ask anyway
                and errors.append(f"{response.status} {response.url}")
            ),
        )
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, f"errors in the browser: {errors}"


@pytest.fixture
def marketer(django_user_model):
    return django_user_model.objects.create_superuser("marketer", "", PASSWORD)


def shot(page, name: str) -> None:
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def sign_in(page, live_server) -> None:
    """Through the pages' sign-in page, where they send anyone not signed in."""
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/$"))
    page.fill("#id_username", "marketer")
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{live_server.url}/")
    expect(page.get_by_role("heading", level=1, name="Blasts")).to_be_visible()


@contextlib.contextmanager
def sending(blast: Blast):
    """The sender sends the blast in a thread beside the page; stopped when the block ends (it has
    stopped by itself if the blast completed), and any error it met fails the test."""
    failures, stop = [], threading.Event()

    def sender():
        try:
            send_due(client=get_client(), blast_id=blast.pk, stop=stop)
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=sender, name=f"browser-test-sender-{blast.pk}")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and not failures, failures


def funnel(page) -> dict:
    return page.evaluate(READ_FUNNEL)


@pytest.mark.django_db(transaction=True)
def test_a_marketer_signs_in_creates_a_blast_and_watches_it_fill_in(
    live_server, wsapme_sandbox, settings, marketer, new_page, applier
):
    settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX, settings.WSAPME_BASE_URL = "", True, wsapme_sandbox.url
    settings.SEND_RATE_PER_MINUTE = 0
    # Every message is delivered and read, a second or two apart: several 3 s refreshes to watch.
    wsapme_sandbox.config.update(
        {
            "webhook_url": f"{live_server.url}/api/webhook/wsapme?token=test-webhook-secret",
            "seed": 5,
            "server_ack_after": 0.5,
            "delivered_after": 1.5,
            "read_after": 3.0,
            "p_error": 0,
            "p_delivered": 1,
            "p_read": 1,
            "p_receipts_off": 0,
            "p_reply": 0,
        }
    )
    page = new_page()
    sign_in(page, live_server)

    # A bad line is shown on the form, next to the recipients, and nothing is created.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New blast").click()
    expect(page).to_have_url(f"{live_server.url}/blasts/new/")
    page.fill("#id_tag", "Hari Raya Sale")
    page.fill("#id_follow_up_stage", "Initial")
    page.fill("#id_message", "Salam {first_name}, our Hari Raya sale starts today!")
    page.fill("#id_device", "sandbox")
    page.fill("#id_recipients_text", "0123456789,Aisyah Rahman\n0198765432,Wei Ming\nnot-a-phone,Siti\n")
    page.get_by_role("button", name="Create draft").click()
    error = page.locator("#id_recipients_text_error")
    expect(error.locator("li").first).to_have_text("Line 3: 'not-a-phone' is not a phone number.")
    expect(error.locator("li").last).to_contain_text("Or press Preview")
    expect(page.locator(".field.invalid #id_recipients_text")).to_be_visible()
    expect(page.locator("#id_tag")).to_have_value("Hari Raya Sale")  # what was typed is kept
    shot(page, "create-blast-1-form-error")
    assert not Blast.objects.exists()

    # Fixed, the preview shows each message personalised.
    page.fill(
        "#id_recipients_text", "0123456789,Aisyah Rahman\n0198765432,Wei Ming\n01112345678,Siti Nurhaliza\n"
    )
    page.get_by_role("button", name="Preview").click()
    preview = page.get_by_role("region", name="Preview")
    expect(preview).to_contain_text("3 recipients, 0 duplicates dropped.")
    expect(preview.locator("tbody tr")).to_have_count(3)
    expect(preview.locator("tbody tr").first).to_contain_text(
        "Salam Aisyah, our Hari Raya sale starts today!"
    )
    expect(preview).to_contain_text("Salam Wei, our Hari Raya sale starts today!")
    expect(page.locator("#id_recipients_text_error")).to_have_count(0)
    shot(page, "create-blast-2-preview")
    assert not Blast.objects.exists()  # a preview creates nothing

    page.get_by_role("button", name="Create draft").click()
    expect(page).to_have_url(re.compile(r"/blasts/\d+/$"))
    blast = Blast.objects.get()
    assert (blast.tag, blast.state, blast.recipients.count()) == ("Hari Raya Sale", Blast.State.DRAFT, 3)
    expect(page.locator(".messages")).to_contain_text("3 recipients added, 0 duplicates dropped")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Hari Raya Sale")
    shot(page, "create-blast-3-draft")

    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator(".messages")).to_contain_text("Queued: the sender sends it now.")
    expect(page.locator("#live .state")).to_have_text("Queued")
    expect(page.locator("#live")).to_have_attribute("hx-trigger", "every 3s")
    assert funnel(page) == {"Sent": 0, "Received": 0, "Read": 0, "Replied": 0, "Closed": 0}
    shot(page, "create-blast-4-queued")

    # The sender runs beside the page; the page itself is never reloaded.
    page.evaluate(
        """() => {
          window.__marker = 1;
          window.__swaps = 0;
          document.body.addEventListener("htmx:afterSwap", () => window.__swaps++);
        }"""
    )
    page.fill("#id_message", "Half-typed follow-up")  # issue 18, item 2: the refreshes must keep it
    expect(page.locator("#recipients-live tbody")).to_contain_text("Queued")
    with sending(blast):
        page.wait_for_function(
            f"""() => {{
              const n = ({READ_FUNNEL})();
              return n.Sent === 3 && n.Received > 0;
            }}""",
            timeout=20_000,
        )
        shot(page, "create-blast-5-funnel-filling-in")
        page.wait_for_function(
            f"""() => {{
              const n = ({READ_FUNNEL})();
              return n.Sent === 3 && n.Received === 3 && n.Read === 3
                && document.querySelector("#live .state").textContent.trim() === "Completed";
            }}""",
            timeout=20_000,
        )

    assert page.evaluate("window.__marker") == 1, "the page was reloaded"
    assert page.evaluate("window.__swaps") >= 1, "the live section was not swapped by htmx"
    expect(page.locator("#live figcaption")).to_have_text(
        "Funnel: sent 3, received 3, read 3, replied 0, closed 0."
    )
    expect(page.locator("#live .progress")).to_contain_text("3 of 3 done")
    # Issue 18, item 2: the rest of the page followed without a reload, and kept what was typed.
    reached = page.locator("#timing-live table.timing tbody tr").filter(has_text="Read").locator("td").first
    expect(reached).to_have_text("3")
    expect(page.locator("#timing-live")).to_contain_text("Read 3: 3 by read receipt")
    expect(page.locator("#recipients-live tbody")).not_to_contain_text("Queued")
    expect(page.locator("#recipients-live tbody tr").filter(has_text="Read")).to_have_count(3)
    expect(page.locator("#history-live")).to_contain_text("Completed")
    expect(page.locator("#id_message")).to_have_value("Half-typed follow-up")
    shot(page, "create-blast-6-funnel-filled-in")
    assert set(blast.recipients.values_list("status", flat=True)) == {Status.READ_ACK}


@pytest.mark.django_db(transaction=True)
def test_the_list_filters_and_the_csv_export(live_server, marketer, new_page):
    promo = make_blast(3, tag="Ramadan Promo", follow_up_stage="Initial", status=Status.READ_ACK)
    Blast.objects.filter(pk=promo.pk).update(state=Blast.State.COMPLETED)
    launch = make_blast(2, tag="Product Launch", follow_up_stage="Follow-up 1", status=Status.DELIVERY_ACK)
    Blast.objects.filter(pk=launch.pk).update(state=Blast.State.SENDING)
    page = new_page()
    sign_in(page, live_server)

    rows = page.locator("table.list tbody tr")
    expect(rows).to_have_count(2)
    filters = page.get_by_role("form", name="Filter blasts")

    filters.locator("select[name=state]").select_option(label="Completed")
    filters.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"[?&]state=completed"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Ramadan Promo")
    expect(rows.first).to_contain_text("Completed")
    expect(page.locator(".totals")).to_contain_text("1 blasts")
    expect(page.locator(".totals")).to_contain_text("sent 3 · received 3 · read 3 · replied 0")
    shot(page, "list-filtered-by-state")

    filters.get_by_role("link", name="Clear").click()
    expect(rows).to_have_count(2)
    filters.locator("input[name=tag]").fill("product launch")  # the tag filter ignores case
    filters.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Product Launch")
    expect(rows.first).to_contain_text("Follow-up 1")
    expect(page.locator(".totals")).to_contain_text("sent 2 · received 2 · read 0")
    shot(page, "list-filtered-by-tag")

    filters.locator("input[name=tag]").fill("no such tag")
    filters.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("No blasts match.")

    filters.get_by_role("link", name="Clear").click()
    page.get_by_role("link", name="Ramadan Promo").click()
    expect(page).to_have_url(f"{live_server.url}/blasts/{promo.pk}/")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Export CSV").click()
    download = download_info.value
    assert download.failure() is None
    assert download.suggested_filename == f"blast-{promo.pk}-recipients.csv"
    table = list(csv.reader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert table[0] == CSV_FIELDS
    records = [dict(zip(table[0], row, strict=True)) for row in table[1:]]
    expected = list(promo.recipients.order_by("id").values_list("phone", "name"))
    assert [(r["phone"], r["name"]) for r in records] == expected
    assert {(r["status"], r["status_code"]) for r in records} == {("Read", "READ_ACK")}
    assert all(r["sent_at"] and r["delivered_at"] and r["read_at"] and not r["replied_at"] for r in records)
    # Issue 18, item 13: times as the pages show them (the site's zone), to the second, with the offset.
    sent = promo.recipients.order_by("id").first().sent_at
    assert records[0]["sent_at"] == timezone.localtime(sent).strftime("%Y-%m-%d %H:%M:%S+08:00")
    shot(page, "blast-page-after-csv-export")


@pytest.mark.django_db(transaction=True)
def test_pages_are_usable_at_phone_width(live_server, marketer, new_page):
    blast = make_blast(
        4,
        tag="Merdeka Day Campaign For Existing Customers",
        follow_up_stage="Follow-up 2",
        status=Status.SERVER_ACK,
        message="Selamat Hari Merdeka {first_name}! Reply YES for the full catalogue: https://example.com/"
        "merdeka-catalogue-2025-with-a-long-address-that-must-wrap",
    )
    make_blast(2, tag="Product Launch", status=Status.REPLIED)
    page = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sign_in(page, live_server)

    other = Blast.objects.exclude(pk=blast.pk).get()
    recipient = blast.recipients.first()
    segment = Segment.objects.create(
        name="Merdeka readers with a long name that must wrap on a phone",
        rules=rules_clean([{"kind": "reached", "stage": "sent", "tag": blast.tag, "days": 30}]),
    )
    opt_out_add(phone=other.recipients.first().phone, reason="Asked by phone to stop", by=SYSTEM)
    pages = {
        "phone-blast-list": "/",
        "phone-blast-page": f"/blasts/{blast.pk}/",
        "phone-new-blast": "/blasts/new/",
        "phone-overview": "/overview/",
        "phone-compare": f"/compare/?a=blast:{blast.pk}&b=blast:{other.pk}",
        "phone-status": "/status/",
        "phone-recipient": f"/blasts/{blast.pk}/recipients/{recipient.pk}/",
        "phone-sequence": f"/blasts/{blast.pk}/sequence/",
        "phone-contacts": "/contacts/",
        "phone-contact": f"/contacts/{recipient.contact_id}/",
        "phone-contact-import": "/contacts/import/",
        "phone-segments": "/segments/",
        "phone-new-segment": "/segments/new/",
        "phone-segment": f"/segments/{segment.pk}/",
        "phone-opt-outs": "/opt-outs/",
    }
    too_wide = {}
    for name, path in pages.items():
        page.goto(f"{live_server.url}{path}")
        expect(page.locator("main h1")).to_be_visible()
        shot(page, name)
        # A phone shrinks a page that is too wide to fit (innerWidth grows), so check both widths.
        scroll, client, inner = page.evaluate(
            """() => [document.documentElement.scrollWidth, document.documentElement.clientWidth,
                      window.innerWidth]"""
        )
        if scroll > client + 1 or inner != 390:
            too_wide[path] = {"scrollWidth": scroll, "clientWidth": client, "innerWidth": inner}
    assert not too_wide, f"pages wider than the phone: {too_wide}"

    # Issue 18, item 10: cards keep their labels, and no column of a number table is dropped.
    page.goto(f"{live_server.url}/")
    expect(page.locator("table.list tbody td[data-label='Sent']").first).to_be_visible()
    expect(page.locator("table.list tbody td[data-label='Sent']").first).to_have_text("2")  # newest first
    page.goto(f"{live_server.url}/blasts/{blast.pk}/")
    stuck = page.locator("#live table.stuck")
    for head in ("1\N{EN DASH}6 h", "Probable cause", "List"):
        assert stuck.locator("thead th", has_text=head).is_visible() or stuck.locator(
            "thead th", has_text=head
        ).evaluate("th => getComputedStyle(th).display !== 'none'"), head
    stuck.scroll_into_view_if_needed()
    stuck.evaluate("table => { table.scrollLeft = table.scrollWidth; }")  # scrolled to its last column …
    box = stuck.locator("tbody th").first.bounding_box()
    assert 0 <= box["x"] < 390, box  # … the status names stay in view
    shot(page, "phone-stuck-scrolled")
    expect(page.locator("#recipients-live td[data-label='Status']").first).to_be_visible()


@pytest.mark.django_db(transaction=True)
def test_a_previewed_file_is_kept_names_get_a_fallback_and_bad_lines_do_not_block_the_rest(
    live_server, marketer, new_page
):
    """Issue 18, items 1, 3 and 4: the marketer previews a CSV with a bad line and nameless rows."""
    page = new_page()
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/blasts/new/")
    page.fill("#id_tag", "Raya")
    page.fill("#id_message", "Salam {first_name}!")
    page.fill("#id_device", "5850")
    rows = [f"01234{i:05d},{'Aisyah Rahman' if i < 5 else ''}" for i in range(15)]
    contents = "phone,name\n" + "\n".join([*rows[:7], "12345,Typo", *rows[7:]]) + "\n"
    page.set_input_files(
        "#id_recipients_file", {"name": "raya.csv", "mimeType": "text/csv", "buffer": contents.encode()}
    )
    page.get_by_role("button", name="Preview").click()

    preview = page.get_by_role("region", name="Preview")
    expect(preview).to_contain_text("15 recipients, 0 duplicates dropped, 1 line left out (below).")
    expect(page.locator("#names-warning")).to_contain_text("10 of 15 recipients have no name")
    expect(page.locator("#names-warning")).to_contain_text("{first_name|Tuan/Puan}")
    expect(page.locator("#distinct-texts")).to_have_text("2 different texts will go out:")
    expect(preview.locator("table.texts tbody tr").first).to_contain_text("Salam !")
    expect(preview.locator("table.rejected")).to_contain_text("CSV line 9")
    expect(preview.locator("table.rejected")).to_contain_text("'12345' is too short.")
    download = preview.get_by_role("link", name="Download the lines left out (CSV)")
    assert "12345" in page.evaluate("href => decodeURIComponent(href)", download.get_attribute("href"))
    expect(page.locator("#kept-file")).to_contain_text("Using raya.csv from your preview")
    shot(page, "new-blast-preview-bad-line-and-blank-names")

    # A fallback for the nameless, and Preview again: the file is not chosen a second time.
    page.fill("#id_message", "Salam {first_name|Tuan/Puan}!")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#names-warning")).to_contain_text("they get the fallback")
    expect(preview.locator("table.texts")).to_contain_text("Salam Tuan/Puan!")
    expect(preview.locator("table.texts")).to_contain_text("Salam Aisyah!")
    assert not Blast.objects.exists()

    page.get_by_role("button", name="Create with the 15 valid recipients").click()
    expect(page).to_have_url(re.compile(r"/blasts/\d+/$"))
    blast = Blast.objects.get()
    assert (blast.tag, blast.recipients.count(), blast.message) == (
        "Raya",
        15,
        "Salam {first_name|Tuan/Puan}!",
    )
    shot(page, "new-blast-created-with-the-valid-ones")


@pytest.mark.django_db(transaction=True)
def test_create_after_preview_needs_no_second_upload(live_server, marketer, new_page):
    """Issue 18, item 1: Preview, then Create draft, with the file chosen once."""
    page = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/blasts/new/")
    page.fill("#id_tag", "Launch")
    page.fill("#id_message", "Hi {name|there}")
    page.fill("#id_device", "5850")
    contents = "phone,name\n" + "\n".join(f"01234{i:05d},Name {i}" for i in range(15)) + "\n"
    page.set_input_files(
        "#id_recipients_file", {"name": "launch.csv", "mimeType": "text/csv", "buffer": contents.encode()}
    )
    page.get_by_role("button", name="Preview").click()
    expect(page.get_by_role("region", name="Preview")).to_contain_text("15 recipients")
    page.get_by_role("button", name="Create draft").click()
    expect(page).to_have_url(re.compile(r"/blasts/\d+/$"))
    expect(page.locator(".messages")).to_contain_text("15 recipients added")
    assert Blast.objects.get().recipients.count() == 15


@pytest.mark.django_db(transaction=True)
def test_the_rate_is_over_the_sending_time_and_a_cancelled_blasts_unsent_say_so(
    live_server, marketer, new_page
):
    """Issue 18, items 7 and 8."""
    from datetime import timedelta

    from django.utils import timezone

    from blasts.lifecycle import blast_cancel, blast_queue, blast_start

    sending = make_blast(30, tag="Sending")
    blast_queue(blast=sending)
    blast_start(blast=sending)
    start = timezone.now() - timedelta(minutes=12)
    for minute, recipient in enumerate(sending.recipients.order_by("id")[:21]):  # 21 sends over 10 min
        BlastRecipient.objects.filter(pk=recipient.pk).update(
            status=Status.PENDING, sent_at=start + timedelta(seconds=30 * minute)
        )
    cancelled = make_blast(4, tag="Cancelled")
    blast_cancel(blast=cancelled)

    page = new_page()
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/blasts/{sending.pk}/")
    expect(page.locator("#send-rate")).to_have_text("· 2.0 a minute")  # not 21 sends / 5 minutes
    # 9 left at 2 a minute: done in about 4.5 minutes, on today's weekday or, near midnight, tomorrow's.
    days = {(timezone.localtime() + timedelta(minutes=m)).strftime("%a") for m in (0, 10)}
    expect(page.locator("#send-eta")).to_contain_text(re.compile("|".join(days)))
    shot(page, "rate-over-the-sending-time")

    page.goto(f"{live_server.url}/blasts/{cancelled.pk}/")
    expect(page.locator("#live .apart")).to_contain_text("Not sent (cancelled) 4")
    expect(page.locator("#live .stuck")).to_contain_text(
        "Not sent: the blast was cancelled, so it never will be."
    )
    expect(page.locator("#live")).not_to_contain_text("Not sent yet")
    shot(page, "cancelled-blast-unsent")


@pytest.mark.django_db(transaction=True)
def test_risky_buttons_ask_first_naming_how_many_people(live_server, marketer, new_page):
    """Issue 18, item 11: Send, Cancel and Resend unknown ask; no Resend unknown when none is unknown."""
    from blasts.lifecycle import blast_complete, blast_queue, blast_start
    from blasts.models import StatusHistory
    from blasts.services import recipient_advance

    draft = make_blast(12, tag="Draft")
    page = new_page()
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/blasts/{draft.pk}/")
    page.answer = False  # the first time, the marketer says no
    page.get_by_role("button", name="Send", exact=True).click()
    assert page.dialogs == ["Send this blast to 12 people now? Messages cannot be taken back."]
    assert Blast.objects.get(pk=draft.pk).state == Blast.State.DRAFT
    page.answer = True
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator(".messages")).to_contain_text("Queued")
    assert Blast.objects.get(pk=draft.pk).state == Blast.State.QUEUED

    done = make_blast(3, tag="Done")
    blast_queue(blast=done)
    blast_start(blast=done)
    blast_complete(blast=done)
    page.goto(f"{live_server.url}/blasts/{done.pk}/")
    expect(page.locator("#live .actions")).not_to_contain_text("Resend unknown")
    recipient = done.recipients.first()
    for status in (Status.SENDING, Status.UNKNOWN):
        recipient_advance(recipient=recipient, status=status, source=StatusHistory.Source.SEND)
    page.reload()
    page.get_by_role("button", name="Resend unknown").click()
    expect(page.locator(".messages")).to_contain_text("Requeued")
    assert "Send again to the 1 person whose send is unknown? Some of them may get it twice." in page.dialogs


@pytest.mark.django_db(transaction=True)
def test_the_overview_funnel_and_the_per_day_table_agree_on_sent(live_server, marketer, new_page):
    """Issue 18, item 6: a message the gateway took and WhatsApp then refused is failed in both."""
    from .test_one_number import EXPECTED, every_status_blast

    every_status_blast()
    page = new_page()
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/overview/")
    funnel_sent = page.locator("figure.funnel table tbody tr").first.locator("td").first.inner_text()
    per_day = page.locator("table.numbers").last.locator("tbody tr")
    day_sent = sum(int(row.locator("td").first.inner_text()) for row in per_day.all())
    assert (int(funnel_sent), day_sent) == (EXPECTED["sent"], EXPECTED["sent"])
    expect(page.locator("figure.funnel .apart")).to_contain_text(f"Failed {EXPECTED['failed']}")
    shot(page, "overview-sent-agrees")


@pytest.mark.django_db(transaction=True)
def test_closing_a_sale_from_the_recipients_table_and_the_recipient_page(live_server, marketer, new_page):
    """Issue 18, item 12: one click in the table, or a note and a deal value on the recipient's page."""
    blast = make_blast(3, tag="Sale", status=Status.READ_ACK)
    first, second, _ = blast.recipients.order_by("id")
    page = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/blasts/{blast.pk}/?status=READ_ACK")
    page.get_by_role("button", name=f"Mark {first.phone} closed").click()
    expect(page.locator(".messages")).to_contain_text(f"{first.phone} marked closed.")
    expect(page).to_have_url(re.compile(r"\?status=READ_ACK#recipients$"))  # back where the click was
    expect(page.locator("#live figcaption")).to_contain_text("closed 1.")
    shot(page, "phone-mark-closed-from-the-table")

    page.goto(f"{live_server.url}/blasts/{blast.pk}/recipients/{second.pk}/")
    page.fill("input[name=note]", "Bought 2 boxes")
    page.fill("input[name=deal_value]", "149.90")
    page.get_by_role("button", name="Mark closed (sale made)").click()
    expect(page.locator(".messages")).to_contain_text(f"{second.phone} marked closed.")
    expect(page.locator("main")).to_contain_text("Marked: deal RM 149.90 · Bought 2 boxes")
    second.refresh_from_db()
    assert (second.status, str(second.deal_value), second.mark_note) == (
        Status.CLOSED,
        "149.90",
        "Bought 2 boxes",
    )
    shot(page, "phone-mark-closed-with-a-value")


@pytest.mark.django_db(transaction=True)
def test_filters_say_what_is_wrong_and_offer_the_tags_there_are(live_server, marketer, new_page):
    """Issue 18, item 9: date pickers, a reversed range is an error, tags offered and found in any case."""
    make_blast(2, tag="Raya Promo 2026")
    make_blast(2, tag="Merdeka", follow_up_stage="Follow-up 1")
    page = new_page()
    sign_in(page, live_server)
    filters = page.get_by_role("form", name="Filter blasts")
    expect(filters.locator("input[name=date_from]")).to_have_attribute("type", "date")
    options = page.locator("#tag-choices option")
    assert [options.nth(i).get_attribute("value") for i in range(options.count())] == [
        "Merdeka",
        "Raya Promo 2026",
    ]

    filters.locator("input[name=date_from]").fill("2026-12-05")
    filters.locator("input[name=date_to]").fill("2026-12-01")
    filters.get_by_role("button", name="Filter").click()
    expect(filters.locator(".error")).to_have_text(
        "To (01 Dec 2026) is before From (05 Dec 2026): swap them."
    )

    page.goto(f"{live_server.url}/?tag=raya")
    hint = page.locator("#similar-tags")
    expect(hint).to_contain_text("No blast has the tag “raya”. Tags like it:")
    hint.get_by_role("link", name="Raya Promo 2026").click()
    expect(page.locator(".totals")).to_contain_text("1 blasts")
    page.goto(f"{live_server.url}/?tag=raya promo 2026&stage=INITIAL")  # any case
    expect(page.locator(".totals")).to_contain_text("1 blasts")
    shot(page, "filters-any-case")


@pytest.mark.django_db(transaction=True)
def test_a_scheduled_blast_says_when_with_the_day_and_the_zone(live_server, marketer, new_page):
    """Issue 18, item 11: a date-time picker naming the zone; "Scheduled for …" on the page and the list."""
    page = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/blasts/new/")
    expect(page.locator("#id_scheduled_at")).to_have_attribute("type", "datetime-local")
    expect(page.locator("#id_scheduled_at_helptext")).to_contain_text(
        "in Kuala Lumpur time (Asia/Kuala_Lumpur)"
    )
    page.fill("#id_tag", "Christmas")
    page.fill("#id_message", "Merry Christmas {first_name|friend}!")
    page.fill("#id_device", "5850")
    page.fill("#id_scheduled_at", "2099-12-24T09:00")
    page.fill("#id_recipients_text", "0123456789,Ali\n")
    page.get_by_role("button", name="Create draft").click()
    expect(page).to_have_url(re.compile(r"/blasts/\d+/$"))
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#live .state")).to_have_text("Scheduled for Thu 24 Dec, 09:00 (Kuala Lumpur)")
    page.goto(f"{live_server.url}/")
    expect(page.locator("table.list .state").first).to_have_text(
        "Scheduled for Thu 24 Dec, 09:00 (Kuala Lumpur)"
    )
    shot(page, "phone-scheduled-blast")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("file", "first"),
    [
        ("google_contacts.csv", "Salam Aisyah!"),
        ("contacts.xlsx", "Salam Aminah!"),
        ("semicolon.csv", "Salam Ali!"),
    ],
)
def test_real_files_from_real_tools_preview_their_recipients(live_server, marketer, new_page, file, first):
    """Issue 18, item 5: a Google Contacts export, an Excel workbook, a semicolon CSV."""
    page = new_page()
    sign_in(page, live_server)
    page.goto(f"{live_server.url}/blasts/new/")
    page.fill("#id_tag", "Files")
    page.fill("#id_message", "Salam {first_name}!")
    page.fill("#id_device", "5850")
    page.set_input_files("#id_recipients_file", str(Path(__file__).parent / "fixtures" / "recipients" / file))
    page.get_by_role("button", name="Preview").click()
    preview = page.get_by_role("region", name="Preview")
    expect(preview).to_contain_text("2 recipients, 0 duplicates dropped.")
    expect(preview.locator("table.texts")).to_contain_text(first)
    expect(preview.locator("table.rejected")).to_have_count(0)
    shot(page, f"preview-{file.replace('.', '-')}")


@pytest.mark.django_db(transaction=True)
def test_a_marketer_imports_contacts_builds_a_segment_sends_a_blast_from_it_and_opens_a_timeline(
    live_server, wsapme_sandbox, settings, marketer, new_page, tmp_path, applier
):
    """Issue 19's walk: import a CSV, build a segment, create and send a blast from it, open a contact."""
    settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX, settings.WSAPME_BASE_URL = "", True, wsapme_sandbox.url
    settings.SEND_RATE_PER_MINUTE = 0
    wsapme_sandbox.config.update(
        {
            "webhook_url": f"{live_server.url}/api/webhook/wsapme?token=test-webhook-secret",
            "seed": 3,
            "server_ack_after": 0.3,
            "delivered_after": 0.8,
            "read_after": 1.5,
            "p_error": 0,
            "p_delivered": 1,
            "p_read": 1,
            "p_receipts_off": 0,
            "p_reply": 0,
        }
    )
    upload = tmp_path / "pelanggan.csv"
    upload.write_text(
        "No. Telefon,Nama,Bandar,Tags\n"
        "012-345 6789,Aisyah Rahman,Ipoh,VIP\n"
        "0198765432,Wei Ming,Kuala Lumpur,VIP\n"
        "01112345678,Siti Nurhaliza,Ipoh,VIP; Raya\n"
        "0171234567,Kumar,Ipoh,\n"
        "not-a-phone,Nobody,Ipoh,VIP\n",
        encoding="utf-8",
    )
    page = new_page(viewport={"width": 1366, "height": 900})
    sign_in(page, live_server)

    # 1. Import: the columns guessed from Malay headers, a tag for everyone, the summary.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Contacts").click()
    page.get_by_role("link", name="Import contacts").click()
    page.set_input_files("#id_file", str(upload))
    page.get_by_role("button", name="Upload").click()
    mapping = page.locator("#mapping")
    expect(mapping).to_contain_text("012-345 6789")
    shot(page, "contacts-1-mapping")
    page.get_by_label("Tags for every contact").fill("Pelanggan 2026")
    page.get_by_role("button", name="Import").click()
    summary = page.locator("#import-summary tbody td")
    expect(summary.nth(1)).to_have_text("4")  # created
    expect(summary.nth(5)).to_have_text("1")  # invalid
    expect(page.locator("table.rejected")).to_contain_text("not-a-phone")
    shot(page, "contacts-2-imported")
    aisyah = Contact.objects.get(phone="+60123456789")
    assert aisyah.attributes == {"bandar": "Ipoh"}
    assert set(aisyah.tags.values_list("name", flat=True)) == {"VIP", "Pelanggan 2026"}

    # 2. A segment: tag VIP and bandar equals ipoh, previewed before it is saved.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Segments").click()
    page.get_by_role("link", name="New segment").click()
    page.fill("#id_name", "Ipoh VIPs")
    expect(page.locator("#id_rules-0-value")).to_be_hidden()  # a row shows the boxes of its kind alone
    page.select_option("#id_rules-0-kind", "tag")
    expect(page.locator("#id_rules-0-value")).to_be_visible()
    expect(page.locator("#id_rules-0-stage")).to_be_hidden()
    expect(page.locator("#id_rules-0-op option[value='equals']")).to_be_hidden()
    page.select_option("#id_rules-0-op", "is")
    page.fill("#id_rules-0-value", "VIP")
    page.get_by_role("button", name="Add a rule").click()
    page.select_option("#id_rules-1-kind", "attribute")
    page.fill("#id_rules-1-key", "bandar")
    page.select_option("#id_rules-1-op", "equals")
    page.fill("#id_rules-1-value", "ipoh")
    page.get_by_role("button", name="Preview").click()
    preview = page.get_by_role("region", name="Preview (not saved)")
    expect(preview).to_contain_text("Aisyah Rahman")
    expect(preview).to_contain_text("Siti Nurhaliza")
    expect(preview).not_to_contain_text("Wei Ming")
    expect(preview).not_to_contain_text("Kumar")
    shot(page, "contacts-3-segment-preview")
    assert not Segment.objects.exists()  # a preview saves nothing
    page.get_by_role("button", name="Save segment").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Ipoh VIPs")

    # 3. A blast from it, with an attribute placeholder; sent to the sandbox, watched to the end.
    page.fill("#id_tag", "Raya Ipoh")
    page.fill("#id_message", "Salam {first_name}, jumpa di kedai {bandar|kami}!")
    page.fill("#id_device", "sandbox")
    shot(page, "contacts-4-segment")
    page.get_by_role("button", name="Create draft blast").click()
    expect(page).to_have_url(re.compile(r"/blasts/\d+/$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("to the members of the segment Ipoh VIPs")
    blast = Blast.objects.get()
    assert blast.segment.name == "Ipoh VIPs"
    assert sorted(blast.recipients.values_list("name", flat=True)) == ["Aisyah Rahman", "Siti Nurhaliza"]
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#live .state")).to_have_text("Queued")
    with sending(blast):
        page.wait_for_function(
            f"""() => {{
              const n = ({READ_FUNNEL})();
              return n.Sent === 2 && n.Read === 2
                && document.querySelector("#live .state").textContent.trim() === "Completed";
            }}""",
            timeout=20_000,
        )
    shot(page, "contacts-5-blast-sent")
    texts = {message.phone: message.text for message in wsapme_sandbox.messages.values()}
    assert texts == {
        "60123456789": "Salam Aisyah, jumpa di kedai Ipoh!",
        "601112345678": "Salam Siti, jumpa di kedai Ipoh!",
    }

    # 4. One person's timeline, from the blast's recipients.
    page.locator("#recipients-live").get_by_role("link", name="+60123456789").click()
    page.get_by_role("link", name="Everything about this person").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Aisyah Rahman")
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("Raya Ipoh")
    expect(timeline).to_contain_text("Read")
    shot(page, "contacts-6-timeline")

    # The same pages at phone width.
    phone = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sign_in(phone, live_server)
    for name, path in {
        "contacts-phone-list": "/contacts/?tag=VIP",
        "contacts-phone-timeline": f"/contacts/{aisyah.pk}/",
        "contacts-phone-segment": f"/segments/{blast.segment_id}/",
    }.items():
        phone.goto(f"{live_server.url}{path}")
        expect(phone.locator("main h1")).to_be_visible()
        shot(phone, name)
        assert phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path


# --- issue 21: a blast with two variants and a link, its readers clicking in the sandbox --------------

# The variants table in the live section: {"A": {"Sent": "10", "Clicked": "3 · 30.0% (10.8 to 60.3)", ...}}.
READ_VARIANTS = """() => Object.fromEntries([...document.querySelectorAll("#live table.variants tbody tr")].map(
  r => [r.querySelector("th").textContent.trim(),
        Object.fromEntries([...r.querySelectorAll("td")].map(td => [td.dataset.label, td.textContent.trim()]))]))"""


@pytest.mark.django_db(transaction=True)
def test_a_marketer_tests_two_variants_with_a_link_and_sees_each_ones_funnel_and_clicks(
    live_server, wsapme_sandbox, settings, marketer, new_page, applier, our_links
):
    settings.WSAPME_TOKEN, settings.WSAPME_SANDBOX, settings.WSAPME_BASE_URL = "", True, wsapme_sandbox.url
    settings.SEND_RATE_PER_MINUTE = 0
    # our_links: /l/ served as blastsite.wsgi serves it (pytest's live server is Django's handler alone).
    settings.LINK_PREVIEW_SECONDS = 0.3  # the sandbox's preview fetch comes at once; its readers later
    wsapme_sandbox.config.update(
        {
            "webhook_url": f"{live_server.url}/api/webhook/wsapme?token=test-webhook-secret",
            "seed": 8,
            "server_ack_after": 0.3,
            "delivered_after": 0.5,
            "read_after": 1.0,
            "click_after": 1.0,
            "p_error": 0,
            "p_delivered": 1,
            "p_read": 1,
            "p_reply": 0.2,
            "p_click": 0.2,
            "p_click_if": {"beli sekarang": 0.9},  # variant B's words get the clicks
            "p_link_preview": 1,  # every link is fetched for a preview first: never a click
        }
    )
    page = new_page(viewport={"width": 1366, "height": 900})
    sign_in(page, live_server)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New blast").click()
    page.fill("#id_tag", "Raya links")
    page.fill("#id_message", "{Salam|Hai} {first_name|Tuan/Puan}! Jualan Raya: https://shop.example.com/raya")
    page.fill("#id_device", "sandbox")
    page.get_by_text("Variants: test other wordings").click()
    page.fill("#id_variant_b", "{first_name|Tuan/Puan}, beli sekarang: https://shop.example.com/raya?v=b.")
    page.fill("#id_recipients_text", "\n".join(f"012{n:07d},Person {n}" for n in range(2345600, 2345630)))
    page.get_by_role("button", name="Preview").click()
    preview = page.get_by_role("region", name="Preview")
    expect(preview.get_by_role("heading", name=re.compile("Variant A"))).to_be_visible()
    expect(preview.get_by_role("heading", name=re.compile("Variant B"))).to_be_visible()
    expect(page.locator("#wordings")).to_contain_text("its choices make 2 different texts")
    shot(page, "variants-1-preview")

    page.get_by_role("button", name="Create draft").click()
    expect(page).to_have_url(re.compile(r"/blasts/\d+/$"))
    blast = Blast.objects.get()
    assert blast.variants and blast.track_links
    expect(page.locator("#variants")).to_be_visible()
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.locator("#live .state")).to_have_text("Queued")
    page.evaluate("() => { window.__marker = 1; }")
    with sending(blast):
        page.wait_for_function(
            f"""() => {{
              const v = ({READ_VARIANTS})();
              return v.A && v.B && Number(v.A.Sent) + Number(v.B.Sent) === 30
                && parseInt(v.B.Clicked) >= 5 && parseInt(v.B.Replied) >= 1;
            }}""",
            timeout=60_000,
        )
    assert page.evaluate("() => window.__marker") == 1  # never reloaded
    variants = page.evaluate(READ_VARIANTS)
    for letter in "AB":
        assert re.search(
            r"\d+ · \d+\.\d% \(\d+\.\d to \d+\.\d\)", variants[letter]["Clicked"]
        )  # with its interval
        assert re.search(r"\d+ · \d+\.\d% \(\d+\.\d to \d+\.\d\)", variants[letter]["Replied"])
    expect(page.locator("#variant-B .verdict").first).to_contain_text(re.compile("noise"))
    shot(page, "variants-2-blast-page")
    page.locator("#live").screenshot(path=ARTIFACTS / "variants-2b-live-section.png")  # to read at full size

    # Previews were fetched and kept, never counted; clicks are counted once a recipient.
    assert Click.objects.filter(preview=True).count() >= 30
    clicked = BlastRecipient.objects.filter(clicked_at__isnull=False)
    assert clicked.count() == sum(int(variants[letter]["Clicked"].split()[0]) for letter in "AB")
    assert not clicked.filter(status__lt=Status.READ_ACK).exists()  # a click proves it was read

    phone = new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sign_in(phone, live_server)
    phone.goto(f"{live_server.url}/blasts/{blast.pk}/")
    expect(phone.locator("#variants")).to_be_visible()
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width}px wide on a 390px phone"
    shot(phone, "variants-3-blast-page-phone")
    phone.locator("#variants").scroll_into_view_if_needed()
    phone.screenshot(path=ARTIFACTS / "variants-3b-phone-variants.png")
