"""`taskrouter review` in a real browser (Debian's headless Chromium, driven by Playwright): edits
made on the page are in the reviewed file at once and survive a reload; the original is untouched; a
copy changed on disk is told on the page, never written over; labels the task file lacks are flagged,
never offered; no other page can frame the review."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from taskrouter.review.store import ReviewStore

from .reviewing import TASKS, example_copy, ids, reviewed, serving

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update",
]  # fmt: skip


@pytest.fixture
def reviewing(tmp_path):
    source = example_copy(tmp_path)
    store = ReviewStore(source, TASKS)
    with serving(store) as server:
        yield source, store, server.url


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser.new_page()
        browser.close()


def test_edits_are_saved_at_once_and_survive_a_reload(reviewing, page):
    source, store, url = reviewing
    original = source.read_bytes()
    first, second = (json.loads(line)["id"] for line in original.decode().splitlines()[:2])
    page.goto(url)
    page.wait_for_selector("text=1 / 43")
    assert page.text_content("#conversation-id") == first

    # change a label with the select: the first conversation's only turn, to follow_up_email
    with page.expect_response("**/api/label") as answer:
        page.select_option('select[aria-label="task of message 0"]', "follow_up_email")
    assert answer.value.ok
    saved = reviewed(store)[0]["messages"][0]["expect"]
    assert saved == {"task": "follow_up_email", "event": "start"}

    # next conversation with the keyboard, flag it, then remove the third one
    page.keyboard.press("j")
    page.wait_for_selector(f"#conversation-id >> text={second}")
    with page.expect_response("**/api/flag"):
        page.keyboard.press("f")
    page.wait_for_selector("#flag.on")
    page.keyboard.press("j")
    third = page.text_content("#conversation-id")
    with page.expect_response("**/api/remove"):
        page.keyboard.press("x")
    page.wait_for_selector("text=3 / 42")
    page.keyboard.press("Control+x")  # the browser's shortcut, not the page's: nothing removed
    page.wait_for_selector("text=3 / 42")
    assert third not in [c["id"] for c in reviewed(store)]
    assert json.loads(store.flags_file.read_text()) == [second]

    # label with a digit: 0 is no task, and the events that follow are derived again
    page.keyboard.press("k")
    page.wait_for_selector(f"#conversation-id >> text={second}")
    with page.expect_response("**/api/label"):
        page.keyboard.press("0")
    labels = [m["expect"] for m in reviewed(store)[1]["messages"] if "expect" in m]
    assert labels[0] == {"task": None, "event": "none"}
    assert all(label["event"] != "continue" or label["task"] for label in labels)

    page.reload()
    page.wait_for_selector("text=2 / 42")  # back where the reviewer was
    assert page.text_content("#conversation-id") == second
    assert page.eval_on_selector("#flag", "button => button.classList.contains('on')")
    page.keyboard.press("k")
    page.wait_for_selector(f"#conversation-id >> text={first}")
    assert page.input_value('select[aria-label="task of message 0"]') == "follow_up_email"
    assert source.read_bytes() == original  # the original is never written


def test_another_page_cannot_frame_the_review(reviewing, page):
    """A page on another local port frames the review under a lure: one click would remove a
    conversation. The browser refuses to show the review in any frame."""
    _, store, url = reviewing

    class Lure(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = f'<p>win a prize: click the button</p><iframe src="{url}" width="900" height="400"></iframe>'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    lure = ThreadingHTTPServer(("127.0.0.1", 0), Lure)
    threading.Thread(target=lure.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://127.0.0.1:{lure.server_port}/", wait_until="load")  # the frame's load included
        (framed,) = page.main_frame.child_frames
        assert framed.query_selector("#remove") is None
        assert framed.query_selector("#messages") is None
    finally:
        lure.shutdown()
        lure.server_close()
    assert len(reviewed(store)) == 43


def test_the_page_says_the_copy_changed_on_disk_and_writes_nothing(reviewing, page):
    source, store, url = reviewing
    page.goto(url)
    page.wait_for_selector("text=1 / 43")
    first = page.text_content("#conversation-id")
    ReviewStore(source, TASKS).remove("linkedin-start")  # a second review of the same file, meanwhile

    with page.expect_response("**/api/remove") as answer:
        page.keyboard.press("x")
    assert answer.value.status == 409
    page.wait_for_selector("#notice >> text=changed on disk")
    assert page.is_visible("#notice")
    page.wait_for_selector("text=1 / 42")  # the page shows the copy as it is now
    assert page.text_content("#conversation-id") == first  # nothing removed here
    assert first in ids(reviewed(store)) and "linkedin-start" not in ids(reviewed(store))

    with page.expect_response("**/api/remove") as answer:  # an edit on the view shown now is saved
        page.keyboard.press("x")
    assert answer.value.ok
    assert first not in ids(reviewed(store)) and "linkedin-start" not in ids(reviewed(store))


def test_a_label_the_task_file_lacks_is_flagged_and_never_offered(tmp_path, page):
    source = example_copy(tmp_path)
    lines = source.read_text().splitlines(keepends=True)
    source.write_text("".join(
        line.replace('"prepare_linkedin_post"', '"ghost_task"') if '"linkedin-start"' in line else line for line in lines
    ))  # fmt: skip
    store = ReviewStore(source, TASKS)
    with serving(store) as server:
        page.goto(server.url + "#linkedin-start")
        page.wait_for_selector("#conversation-id >> text=linkedin-start")
        assert page.is_visible(".label.unknown")
        assert "ghost_task" in page.text_content("#notice")
        select = 'select[aria-label="task of message 0"]'
        assert page.input_value(select) == "ghost_task"  # shown as it is
        assert page.eval_on_selector(f'{select} option[value="ghost_task"]', "option => option.disabled")
        offered = page.eval_on_selector_all(f"{select} option:not([disabled])", "options => options.map(o => o.value)")
        assert offered == ["", *TASKS]

        with page.expect_response("**/api/label"):
            page.keyboard.press("4")  # the fourth task of the task file, whatever the dataset holds
        assert reviewed(store)[ids(reviewed(store)).index("linkedin-start")]["messages"][0]["expect"]["task"] == TASKS[3]
        page.wait_for_selector(".label:not(.unknown)")


def test_a_turn_s_allow_list_is_shown_and_only_its_tasks_are_offered(tmp_path, page):
    """A harvested turn routed with `tasks: ["follow_up_email"]`: the page says so, offers that task and
    no task only, and key 1 is that task, not the task file's first (prepare_meeting_minutes)."""
    source = tmp_path / "harvested.jsonl"
    source.write_text(json.dumps({"id": "allowed-one", "current_task": None, "messages": [
        {"role": "user", "content": "Can you write up the minutes of this morning's call?", "tasks": ["follow_up_email"],
         "expect": {"task": None, "event": "none", "source": "teacher"}},
    ]}) + "\n")  # fmt: skip
    store = ReviewStore(source, TASKS)
    with serving(store) as server:
        page.goto(server.url)
        page.wait_for_selector("#conversation-id >> text=allowed-one")
        assert page.text_content(".label .allowed") == "allowed: follow_up_email"
        options = page.eval_on_selector_all('select[aria-label="task of message 0"] option', "els => els.map(e => e.value)")
        assert options == ["", "follow_up_email"]
        with page.expect_response("**/api/label") as answer:
            page.keyboard.press("1")
        assert answer.value.ok
    assert reviewed(store)[0]["messages"][0]["expect"] == {"task": "follow_up_email", "event": "start", "source": "reviewed"}
    assert reviewed(store)[0]["messages"][0]["tasks"] == ["follow_up_email"]  # kept in the reviewed copy
