"""A required check never skips under CI=true (DEVELOPERS: vectors, RFC text,
tmux, mls-rs and nats-server fail the run when missing)."""

from __future__ import annotations

import pytest

from tests import required


def test_missing_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(required, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="tmux is not installed"):
        required.missing("tmux is not installed")


def test_missing_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(required, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="no nats-server"):
        required.missing("no nats-server")
