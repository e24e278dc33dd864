"""`taskrouter review` in a real browser (Debian's headless Chromium, driven by Playwright): edits
made on the page are in the reviewed file at once and survive a reload; the original is untouched."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from taskrouter.review.server import make_server
from taskrouter.review.store import ReviewStore

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
    "--disable-background-networking", "--disable-component-update",
]  # fmt: skip
TASKS = [t["name"] for t in json.loads((ROOT / "tasks" / "default_tasks.json").read_text())["tasks"]]


@pytest.fixture
def reviewing(tmp_path):
    source = tmp_path / "set.jsonl"
    shutil.copy(ROOT / "datasets" / "example.jsonl", source)
    store = ReviewStore(source, TASKS)
    server = make_server(store)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield source, store, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser.new_page()
        browser.close()


def reviewed(store: ReviewStore) -> list[dict]:
    return [json.loads(line) for line in store.reviewed.read_text().splitlines()]


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


def test_an_edit_without_the_page_token_is_refused(reviewing):
    import urllib.error
    import urllib.request

    _, store, url = reviewing
    request = urllib.request.Request(
        url + "api/remove", data=b'{"id": "linkedin-start"}', method="POST", headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(request, timeout=10)
    assert refused.value.code == 403
    assert "linkedin-start" in [c["id"] for c in reviewed(store)]
    request = urllib.request.Request(url, headers={"Host": "attacker.example:80"})  # DNS rebinding
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(request, timeout=10)
    assert refused.value.code == 403


def test_the_store_refuses_what_is_not_a_label(tmp_path):
    source = tmp_path / "set.jsonl"
    shutil.copy(ROOT / "datasets" / "example.jsonl", source)
    store = ReviewStore(source, TASKS)
    with pytest.raises(ValueError, match="not a task"):
        store.set_label("linkedin-start", 0, "hack")
    with pytest.raises(ValueError, match="not a labelled user turn"):
        store.set_label("minutes-typo-continue", 1, None)  # an assistant message
    with pytest.raises(ValueError, match="no conversation"):
        store.remove("absent")
    with pytest.raises(ValueError, match="another file"):
        ReviewStore(source, TASKS, reviewed=source)
    again = ReviewStore(source, TASKS)  # a second start reads the reviewed copy, not the original
    store.remove("linkedin-start")
    assert "linkedin-start" not in [c["id"] for c in ReviewStore(source, TASKS).state()["conversations"]]
    assert "linkedin-start" in [c["id"] for c in again.state()["conversations"]]  # (its own, older view)
