"""How a host is woken, set from the command line (issue 18 items 3 and 4): wake-on-LAN's MAC,
broadcast and port, or IPMI; shown by host show; hostile values refused in one line, nothing changed."""

from __future__ import annotations

import pytest

from kerub_tui.cli import main
from kerub_tui.core.models import AuditEntry, Host
from kerub_tui.core.store import Store


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "data"
    monkeypatch.setenv("KERUB_TUI_DATA", str(path))
    return path


def run(*argv, capsys):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def with_host(data_dir, capsys) -> None:
    run("disk", "list", capsys=capsys)  # makes the data dir
    store = Store.open(data_dir)
    try:
        store.put(Host(name="h1", address="10.0.0.1"))
    finally:
        store.close()


def power_of(data_dir):
    store = Store.open(data_dir, readonly=True)
    try:
        return store.find_by_name(Host, "h1").power, [a for a in store.list(AuditEntry) if a.action == "host update"]
    finally:
        store.close()


def test_wake_settings_are_set_shown_and_forgotten(data_dir, capsys):
    with_host(data_dir, capsys)
    assert "  wake none: it cannot be woken, so power saving never powers it down" in run(
        "host", "show", "h1", capsys=capsys)[1]
    code, out, err = run("host", "set", "h1", "--wol", "52:54:00:AB:CD:EF", "--wol-broadcast", "192.0.2.255",
                         capsys=capsys)
    assert code == 0, err
    assert out.strip() == "host h1: wake wake-on-LAN 52:54:00:ab:cd:ef (to 192.0.2.255 port 9)"
    code, out, err = run("host", "set", "h1", "--ipmi", "10.0.0.9", "--ipmi-user", "admin", capsys=capsys)
    assert code == 0, err
    assert out.strip() == ("host h1: wake wake-on-LAN 52:54:00:ab:cd:ef (to 192.0.2.255 port 9), "
                           "IPMI admin@10.0.0.9")
    power, audit = power_of(data_dir)
    assert (power.wol_mac, power.wol_broadcast, power.wol_port, power.ipmi_address) == (
        "52:54:00:ab:cd:ef", "192.0.2.255", 9, "10.0.0.9")
    assert len(audit) == 2
    assert run("host", "set", "h1", "--no-wake", capsys=capsys)[0] == 0
    assert power_of(data_dir)[0].wol_mac is None and power_of(data_dir)[0].ipmi_address is None


@pytest.mark.parametrize(("argv", "message"), [
    (["--wol", "52:54:00:ab:cd:ef;reboot"], "is not a MAC address"),
    (["--wol", "52:54:00:ab:cd:ef", "--wol-broadcast", "$(reboot)"], "is not an IPv4 broadcast address"),
    (["--wol", "52:54:00:ab:cd:ef", "--wol-port", "0"], "port"),
    (["--ipmi", "10.0.0.9; reboot"], "10.0.0.9; reboot"),
    (["--ipmi", "10.0.0.9", "--ipmi-user", "root -P secret"], "root -P secret"),
    ([], "nothing to change"),
    (["--no-wake", "--wol", "52:54:00:ab:cd:ef"], "--no-wake forgets how to wake the host"),
])
def test_hostile_or_empty_wake_settings_are_one_line_and_change_nothing(data_dir, capsys, argv, message):
    with_host(data_dir, capsys)
    code, _out, err = run("host", "set", "h1", *argv, capsys=capsys)
    assert code != 0 and message in err, err
    assert len(err.strip().splitlines()) == 1
    power, audit = power_of(data_dir)
    assert power.wol_mac is None and power.ipmi_address is None and audit == []
