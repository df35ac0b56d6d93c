"""The entry point opens the hosts named with -c before the command line is parsed; the backend
then uses those connections, and closes any it cannot use."""

from __future__ import annotations

import threading
from typing import Any

import libvirt
import pytest

from backends.libvirt import connect
from console import cli
from console.start import connect_args

URI = "test:///default"


@pytest.mark.parametrize("argv", [
    ["inventory", "-c", URI, "--json"],
    ["-c", URI, "inventory", "-ctest:///other", "--read-only"],
    ["--connect", URI, "inventory", f"--connect={URI}x"],
    ["inventory", "--json"],
    ["--read-only", "inventory", "-c", "prod-a"],
])
def test_connect_args_reads_what_click_reads(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: dict[str, Any] = {}

    def opened(opts: dict[str, Any], **_: Any) -> Any:
        parsed.update(opts)
        raise SystemExit(0)

    monkeypatch.setattr(cli, "open_backend_from", opened)
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert connect_args(argv) == (list(parsed["connect"]), bool(parsed.get("read_only")))


@pytest.mark.parametrize("argv", [
    ["inventory", "-c", URI, "--help"],
    ["--version", "-c", URI],
    ["inventory", "--", "-c", URI],
    ["inventory", "-c"],
])
def test_nothing_is_opened_for_help_or_after_a_double_dash(argv: list[str]) -> None:
    assert connect_args(argv)[0] == []


def test_an_early_opening_is_taken_over_and_one_that_does_not_fit_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    closing: list[threading.Thread] = []
    discard = connect.Opening.discard
    monkeypatch.setattr(connect.Opening, "discard", lambda self: closing.append(discard(self)) or closing[-1])
    connect.open_early([URI, "test:///other", "not a uri"], read_only=False)
    early = dict(connect._early)
    assert set(early) == {URI, "test:///other"}
    taken = connect.open_ahead([URI], read_only=False)
    assert taken[URI] is early[URI] and not connect._early
    assert len(closing) == 1
    closing[0].join(5)
    with pytest.raises(libvirt.libvirtError):  # closed: it refuses calls
        early["test:///other"].take().getHostname()
    taken[URI].take().close()


def test_an_early_opening_of_another_read_only_setting_is_not_used() -> None:
    connect.open_early([URI], read_only=False)
    early = connect._early[URI]
    taken = connect.open_ahead([URI], read_only=True)
    assert taken[URI] is not early and taken[URI].read_only
    early.join()
    taken[URI].take().close()
