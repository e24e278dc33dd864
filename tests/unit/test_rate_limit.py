"""The teacher's per-minute caps (adapters/rate_limit.py): requests and tokens in any 60 s."""

from taskrouter.adapters.rate_limit import PerMinuteCaps


def test_a_request_over_either_cap_is_refused_until_the_minute_has_passed():
    now = [0.0]
    caps = PerMinuteCaps(requests=2, tokens=1000, clock=lambda: now[0])
    assert caps.admit(600)
    assert not caps.admit(500)  # 1,100 tokens: over the token cap, and not counted
    now[0] = 30.0
    assert caps.admit(400)
    assert not caps.admit(1)  # a third request: over the request cap
    now[0] = 59.9
    assert not caps.admit(1)
    now[0] = 60.0  # the first request has left the window; the second has not
    assert caps.admit(600) and not caps.admit(1)
    assert not PerMinuteCaps(requests=0, tokens=1000).admit(1)  # 0: the teacher is never asked
