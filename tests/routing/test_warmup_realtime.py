"""The warm-up share in real time: the agent's picks on the real monotonic clock follow the curve.

One new instance among three warm ones, T = 3 s; every pick made during the ramp
is counted in the tenth of T it fell in. Spec: the new instance's share in each
tenth is within 5 percentage points of ``w / (3 + w)``, ``w = max(10%, (t/T)^2)``
(the unit tests do the same with a fake clock; this is the one real-time run).
"""

from __future__ import annotations

from hack.routing_warmup_curve import measure


def test_the_share_of_a_new_instance_follows_the_curve_in_real_time() -> None:
    rows = measure(seconds=3.0, warm=3, curve=2.0, min_percent=10.0)
    for middle, expected, measured, picks in rows:
        assert picks >= 1000, (middle, picks)  # enough picks for the share to mean something
        assert abs(measured - expected) <= 0.05, (middle, expected, measured)
