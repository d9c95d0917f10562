"""Against the lab: a host added from the console appears, is discovered, and its figures move."""

from __future__ import annotations

import subprocess

import pytest
from textual.widgets import Input, Static

from kerub_tui.app import KerubApp
from kerub_tui.controller import Controller
from kerub_tui.core.models import Host

from .helpers import plain, settle

pytestmark = pytest.mark.lab


async def until(pilot, predicate, what: str, tries: int = 1200) -> object:
    """Wait (bounded: up to a minute) for something the lab does; fail naming it."""
    for _ in range(tries):
        value = predicate()
        if value:
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"gave up waiting for {what}")


async def test_add_a_lab_host_from_the_console(clean_lab, tmp_path):
    host = clean_lab.hosts[0]
    controller = Controller(tmp_path / "data")
    controller.open_store()
    app = KerubApp(controller)  # the app starts the controller, hosts and monitors included
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.screen.query_one("FirstRun").has_class("-shown")
        await pilot.press("a")
        screen = app.screen
        error = screen.query_one("#addhost-error", Static)
        screen.query_one("#address", Input).value = host.address
        screen.query_one("#port", Input).value = str(host.port)
        screen.query_one("#name", Input).value = "lab1"
        # A key the host does not know: refused, said so, nothing added.
        stranger = tmp_path / "stranger"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
        screen.query_one("#identity", Input).value = str(stranger)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: screen.fetched, "the host key")
        await pilot.press("ctrl+y")
        await until(pilot, lambda: error.has_class("-shown"), "the refusal")
        assert controller.db.count(Host) == 0 and "Nothing was added." in screen.progress
        # The key changes between showing it and accepting it: refused too.
        screen.query_one("#identity", Input).value = str(host.client_key)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: screen.fetched and not screen.busy, "the host key again")
        screen.fetched = (screen.fetched[0], "SHA256:" + "A" * 43)
        await pilot.press("ctrl+y")
        await until(pilot, lambda: error.has_class("-shown") and not screen.busy, "the key mismatch")
        assert host.host_key_fingerprint in plain(error) and controller.db.count(Host) == 0
        # The real key, accepted.
        await pilot.press("ctrl+s")
        await until(pilot, lambda: screen.fetched and not screen.busy, "the host key")
        assert screen.fetched[1] == host.host_key_fingerprint
        assert host.host_key_fingerprint in plain(screen.query_one("#addhost-key-text", Static))
        await pilot.press("ctrl+y")
        await until(pilot, lambda: screen.host_id, "the host to be added")
        await until(pilot, lambda: any(line.startswith("discovered:") for line in screen.progress), "discovery")
        added: Host = controller.db.get(Host, screen.host_id)
        assert added.fingerprint == host.host_key_fingerprint
        assert added.capabilities.os.hostname == host.name
        await pilot.press("escape")
        hosts = app.screen.table("hosts")
        assert hosts.shown_ids() == [added.id]
        assert not app.screen.query_one("FirstRun").has_class("-shown")

        def samples() -> int:
            figures = app.overview.history.hosts.get(added.id)
            return sum(b.cpu_n for b in figures.buckets) if figures else 0

        # The figures move: vmstat samples keep arriving and reach the table's sparkline.
        await until(pilot, lambda: samples() >= 3, "three CPU samples")
        assert hosts.cells_of(added.id)[2].plain == "up"
        assert hosts.cells_of(added.id)[3].plain.strip().split()[0].endswith("%")
