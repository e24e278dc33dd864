"""The review server over real HTTP on loopback: its answers tell the truth about what was saved, a
second server on the same file cannot undo the first's edits, no answer can be framed by another
page, an edit from another origin is refused, and no body makes it fail or stop answering."""

from __future__ import annotations

import http.client
import socket

import pytest

from taskrouter.review.store import ReviewStore

from .reviewing import TASKS, ReviewServer, example_copy, ids, refuse_writes, reviewed, serving


@pytest.fixture
def review(tmp_path):
    with serving(ReviewStore(example_copy(tmp_path), TASKS)) as server:
        yield server


def error_of(answer) -> dict:
    """The error an answer holds, after checking its shape: {"error": {"code", "message"}}."""
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert all(isinstance(value, str) and value for value in body["error"].values()), body
    return body["error"]


def test_an_edit_the_disk_refuses_is_answered_as_not_saved_and_changes_nothing(review, monkeypatch):
    token, before = review.token, review.get("/api/state").json()
    refuse_writes(monkeypatch)
    answer = review.post("/api/remove", {"id": "linkedin-start"}, {"X-Review-Token": token})
    assert answer.status == 500
    assert error_of(answer)["code"] == "not_saved"
    assert "No space left" in error_of(answer)["message"]
    answer = review.post("/api/label", {"id": "minutes-start-terse", "index": 0, "task": None}, {"X-Review-Token": token})
    assert answer.status == 500
    assert review.get("/api/state").json() == before

    monkeypatch.undo()
    assert review.post("/api/flag", {"id": "linkedin-start", "flagged": True}).status == 200
    assert "linkedin-start" in ids(reviewed(review.store))  # the refused removal is not saved later
    assert reviewed(review.store)[0]["messages"][0]["expect"]["task"] == "prepare_meeting_minutes"


def test_a_second_server_on_the_same_file_answers_a_conflict_and_writes_nothing(tmp_path):
    source = example_copy(tmp_path)
    with serving(ReviewStore(source, TASKS)) as first, serving(ReviewStore(source, TASKS)) as second:
        assert first.post("/api/remove", {"id": "linkedin-start"}).status == 200
        answer = second.post("/api/label", {"id": "minutes-start-terse", "index": 0, "task": None})
        assert answer.status == 409
        assert error_of(answer)["code"] == "conflict"
        assert "reload" in error_of(answer)["message"]
        assert "linkedin-start" not in ids(reviewed(first.store))
        assert reviewed(first.store)[0]["messages"][0]["expect"]["task"] == "prepare_meeting_minutes"
        assert "linkedin-start" not in ids(second.get("/api/state").json()["conversations"])  # the page reloads


def raw(server: ReviewServer, request: bytes) -> http.client.HTTPResponse:
    """`request` sent as it is, on a connection of its own: what a browser or a script could send."""
    port = int(server.url.rsplit(":", 1)[1].strip("/"))
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(request)
    response = http.client.HTTPResponse(connection)
    response.begin()
    response.read()
    connection.close()
    return response


def test_no_answer_can_be_framed(review):
    answers = [
        review.get("/"),
        review.get("/api/state"),
        review.get("/absent"),
        review.get("/", headers={"Host": "attacker.example"}),
        review.send("POST", "/api/remove", b'{"id": "linkedin-start"}'),  # no token
        review.post("/api/remove", b"{not json"),
        review.post("/api/remove", {"id": "absent"}),
        review.send("PUT", "/", b""),
        review.send("DELETE", "/api/state"),
    ]
    headers = [dict(answer.headers) for answer in answers]
    for response in (raw(review, b"GET / what HTTP/1.1\r\n\r\n"), raw(review, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")):
        headers.append({k.lower(): v for k, v in response.getheaders()})
    for answer in headers:
        assert answer["x-frame-options"] == "DENY", answer
        assert "frame-ancestors 'none'" in answer["content-security-policy"], answer
        assert answer["x-content-type-options"] == "nosniff", answer
    assert [answer.status for answer in answers[2:]] == [404, 403, 403, 400, 400, 501, 501]
    for answer in answers[2:]:
        error_of(answer)
    assert "linkedin-start" in ids(reviewed(review.store))


def test_an_edit_from_another_origin_is_refused_even_with_the_token(review):
    port = int(review.url.rsplit(":", 1)[1].strip("/"))
    for headers in (
        {"Origin": f"http://127.0.0.1:{port + 1}"},  # a page on another local port
        {"Origin": "null"},  # a sandboxed frame, a file:// page
        {"Sec-Fetch-Site": "same-site"},  # another port of the same host is the same site, not origin
        {"Sec-Fetch-Site": "cross-site"},
    ):
        answer = review.post("/api/remove", {"id": "linkedin-start"}, headers)
        assert answer.status == 403, headers
        assert error_of(answer)["code"] == "forbidden"
    assert "linkedin-start" in ids(reviewed(review.store))
    same_origin = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}
    assert review.post("/api/remove", {"id": "linkedin-start"}, same_origin).status == 200


def test_no_body_makes_the_server_fail_or_stop_answering(review, capfd):
    for body, field in (
        (b"[" * 60000, "JSON"),  # nested deeper than the parser's recursion: within the size limit
        (b'{"id": ' * 5000 + b"1" + b"}" * 5000, "JSON"),
        (b"[]", "object"),
        (b'{"index": 0, "task": null}', "id"),
        (b'{"id": "linkedin-start", "index": "0", "task": null}', "index"),
        (b'{"id": "linkedin-start", "index": 0, "task": ["prepare_linkedin_post"]}', "task"),
        (b"\xff\xfe", "JSON"),
    ):
        answer = review.post("/api/label", body)
        assert answer.status == 400, body[:40]
        assert error_of(answer)["code"] == "invalid_request"
        assert field in error_of(answer)["message"], (body[:40], answer.body)
    answer = review.post("/api/label", b"{" + b" " * 70000 + b"}")
    assert answer.status == 413 and error_of(answer)["code"] == "request_too_large"
    assert review.get("/api/state").status == 200  # still answering
    assert "Traceback" not in capfd.readouterr().err


def test_an_edit_without_the_page_token_is_refused(review):
    answer = review.send("POST", "/api/remove", b'{"id": "linkedin-start"}', {"Content-Type": "application/json"})
    assert answer.status == 403 and error_of(answer)["code"] == "forbidden"
    assert "linkedin-start" in ids(reviewed(review.store))
    answer = review.get("/", headers={"Host": "attacker.example:80"})  # DNS rebinding
    assert answer.status == 403 and error_of(answer)["code"] == "forbidden"
