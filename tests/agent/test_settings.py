"""Settings: explicit env > central config > built-in defaults, and nothing fatal."""

from __future__ import annotations

import threading
import types
import typing
from typing import Any, List, Tuple

import pytest
from pilotfish import settings

_BOOKKEEPING = ("sources", "central_version", "central_extra")


def _has_type(value: Any, hint: Any) -> bool:
    if typing.get_origin(hint) is tuple:
        return isinstance(value, tuple) and all(isinstance(item, str) for item in value)
    return type(value) is hint


def test_the_typed_declaration_and_the_field_table_agree() -> None:
    """``Settings``' annotations declare FIELDS: same names, same order, each typed as its parser returns."""
    hints = typing.get_type_hints(settings.Settings)
    declared = [name for name in hints if name not in _BOOKKEEPING]
    assert declared == [field.name for field in settings.FIELDS]
    assert tuple(declared) == settings.FIELD_NAMES
    for field in settings.FIELDS:
        hint = hints[field.name]
        assert typing.get_type_hints(field.parse)["return"] == hint, field.name
        assert _has_type(field.default, hint), field.name
        assert field.parse(field.default) == field.default, field.name


def test_a_setting_is_a_plain_slot_read_and_a_snapshot_cannot_change() -> None:
    assert not hasattr(settings.Settings, "__getattr__")
    for name in settings.FIELD_NAMES + _BOOKKEEPING:
        assert isinstance(vars(settings.Settings)[name], types.MemberDescriptorType), name
    current = settings.build({}, {})
    assert current.as_dict() == {field.name: field.default for field in settings.FIELDS}
    with pytest.raises(AttributeError):
        current.warmup_seconds = 1.0
    with pytest.raises(AttributeError):
        _ = current.no_such_setting  # type: ignore[attr-defined]


def test_central_config_before_any_load_reads_the_environment_without_deadlock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """apply_central() held the settings lock while current() took it again to load the env."""
    monkeypatch.setattr(settings, "_current", None)
    monkeypatch.setattr(settings, "_env_values", {})
    monkeypatch.setenv("PILOTFISH_WARMUP_CURVE", "3")
    results: List[settings.Settings] = []
    worker = threading.Thread(
        target=lambda: results.append(settings.apply_central({"warmup_seconds": 9}, "v1"))
    )
    worker.daemon = True
    worker.start()
    worker.join(10)
    assert results, "apply_central() did not return"
    assert (results[0].warmup_seconds, results[0].warmup_curve) == (9.0, 3.0)


def test_defaults_match_the_user_contract() -> None:
    current = settings.build({}, {})
    assert (current.warmup_seconds, current.warmup_curve, current.warmup_min_weight_percent) == (
        120.0,
        2.0,
        10.0,
    )
    assert (current.status_host, current.status_port) == ("0.0.0.0", 55199)
    assert current.warmup_before_ready is False and current.readiness_enabled is True
    assert current.tag_headers == ("x-pilotfish-tag",) and current.lane_mode == "permissive"


def test_explicit_env_wins_over_central_config_which_wins_over_defaults() -> None:
    env = settings.read_env({"PILOTFISH_WARMUP_SECONDS": "30"})
    current = settings.build(env, {"warmup_seconds": 60, "warmup_curve": 3}, "v7")
    assert (current.warmup_seconds, current.sources["warmup_seconds"]) == (30.0, "env")
    assert (current.warmup_curve, current.sources["warmup_curve"]) == (3.0, "central")
    assert (current.delay_register_seconds, current.sources["delay_register_seconds"]) == (0.0, "default")
    assert current.central_version == "v7"


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("PILOTFISH_STATUS_PORT", "70000"),
        ("PILOTFISH_WARMUP_ENABLED", "maybe"),
        ("PILOTFISH_LANE_MODE", "loose"),
        ("PILOTFISH_WARMUP_CURVE", "-1"),
        ("PILOTFISH_IGNORE_PATHS", "healthz"),
    ],
)
def test_a_bad_env_value_is_left_out_and_warned_about_once(
    name: str, raw: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(3):
        assert settings.read_env({name: raw}) == {}
    err = capsys.readouterr().err
    assert err.count("pilotfish: warning: %s=%r is invalid" % (name, raw)) == 1


def test_an_invalid_central_value_keeps_the_last_good_one() -> None:
    first = settings.build({}, {"warmup_seconds": 45}, "v1")
    second = settings.build({}, {"warmup_seconds": "fast"}, "v2", previous=first)
    assert second.warmup_seconds == 45.0 and second.central_version == "v2"


def test_central_config_cannot_change_what_only_the_pod_may_set() -> None:
    current = settings.build({}, {"status_port": 1234, "offline_token": "x", "enabled": False})
    assert (current.status_port, current.offline_token, current.enabled) == (55199, "", True)


def test_unknown_central_keys_are_kept_for_the_parts_that_understand_them() -> None:
    lanes = [{"name": "gray", "tag": "gray", "percentage": 10}]
    assert settings.build({}, {"lanes": lanes}).central_extra == {"lanes": lanes}


def test_subscribers_hear_about_changes_and_a_failing_one_does_not_stop_the_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings.load({})
    heard: List[Tuple[float, float]] = []

    def broken(old: settings.Settings, new: settings.Settings) -> None:
        raise ValueError("listener bug")

    unsubscribe_broken = settings.subscribe(broken)
    unsubscribe = settings.subscribe(lambda old, new: heard.append((old.warmup_seconds, new.warmup_seconds)))
    try:
        settings.apply_central({"warmup_seconds": 10}, "v2")
    finally:
        unsubscribe()
        unsubscribe_broken()
    assert heard == [(120.0, 10.0)]
    assert "a settings listener failed" in capsys.readouterr().err


def test_ignored_paths_keep_their_case_and_header_names_do_not() -> None:
    """URL paths are case-sensitive: ``/Healthz`` lower-cased would never match a request."""
    env = settings.read_env(
        {"PILOTFISH_IGNORE_PATHS": "/Healthz, /internal/Ping", "PILOTFISH_TAG_HEADERS": "X-Lane"}
    )
    current = settings.build(env, {})
    assert current.ignore_paths == ("/Healthz", "/internal/Ping")
    assert current.tag_headers == ("x-lane",)
    assert settings.build({}, {"ignore_paths": ["/Metrics"]}).ignore_paths == ("/Metrics",)
