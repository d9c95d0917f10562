"""Against the lab, the console's host actions of issue 17: K on a host whose key was regenerated
shows the accepted and the presented fingerprints, refuses a key that changed again before the admin
said yes, and accepts the one the host presents: it reconnects and is discovered again (item 6);
R reads a host's facts again, so stale facts need no reconnection to be current (item 2's gap)."""

from __future__ import annotations

import pytest
from textual.widgets import Static

from kerub_tui.app import KerubApp
from kerub_tui.controller import Controller
from kerub_tui.core.models import AuditEntry, Host, HostDynamic, HostStatus
from kerub_tui.screens.confirm import ConfirmScreen
from kerub_tui.screens.hosts import HostDetailScreen

from .helpers import Recorder, plain, settle
from .test_lab_console import until

pytestmark = pytest.mark.lab


def status(controller: Controller, host_id: str) -> HostStatus | None:
    dyn = controller.db.get(HostDynamic, host_id)
    return dyn.status if dyn is not None else None


def bounce(lab_host) -> str:
    """A new sshd host key, and every session dropped so the console must connect again."""
    new = lab_host.replace_host_key()
    lab_host.stop_sshd(sessions=True)
    lab_host.start_sshd()
    return new


async def test_k_on_a_host_accepts_its_new_key_after_a_confirmation(clean_lab, tmp_path):
    lab_host = clean_lab.hosts[2]
    controller = Controller(tmp_path / "data")
    controller.open_store()
    recorder = Recorder()
    app = KerubApp(controller)
    async with app.run_test(size=(120, 40), message_hook=recorder) as pilot:
        await settle(app, pilot)
        host = await controller.add_host(name="lab3", address=lab_host.address, port=lab_host.port,
                                         identity=str(lab_host.client_key), fingerprint=lab_host.host_key_fingerprint)
        old = host.fingerprint
        await until(pilot, lambda: status(controller, host.id) is HostStatus.up, "the host to be up")
        new = bounce(lab_host)
        await until(pilot, lambda: status(controller, host.id) is HostStatus.key_mismatch, "the refusal")

        app.open_host(host.id)
        await until(pilot, lambda: isinstance(app.screen, HostDetailScreen), "the host detail")
        await pilot.press("K")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the confirmation")
        impact = plain(app.screen.query_one("#confirm-impact", Static))
        assert f"accepted now: {old}" in impact and f"presented now: {new}" in impact

        # The key changes again before the admin says yes: what was shown is refused, nothing changes.
        newer = bounce(lab_host)
        await pilot.press("y")
        failed = await until(pilot, lambda: recorder.of(KerubApp.ActionFailed), "the refusal of the shown key")
        assert newer in failed[0].error and new in failed[0].error and "\n" not in failed[0].error
        assert controller.db.get(Host, host.id).fingerprint == old
        assert status(controller, host.id) is HostStatus.key_mismatch

        # Again: now the presented key is the one shown, and it is accepted.
        await pilot.press("K")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the second confirmation")
        assert f"presented now: {newer}" in plain(app.screen.query_one("#confirm-impact", Static))
        await pilot.press("y")
        done = await until(pilot, lambda: [m for m in recorder.of(KerubApp.ActionDone)
                                           if m.action.startswith("accept host key")], "the new key accepted")
        assert done[0].result.fingerprint == newer
        assert controller.db.get(Host, host.id).fingerprint == newer
        await until(pilot, lambda: status(controller, host.id) is HostStatus.up, "the host to be up again")
        assert controller.db.get(Host, host.id).capabilities.os.hostname == lab_host.name
        outcomes = [a.outcome for a in controller.db.list(AuditEntry) if a.action == "host rekey"]
        assert sorted(o.split(":")[0] for o in outcomes) == ["key SHA256", "refused"]
        assert f"key {old} -> {newer}" in outcomes

        # The same keys on the hosts table act on the host under the cursor.
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HostDetailScreen), "the main screen")
        app.screen.table("hosts").focus()
        recorder.clear()
        await pilot.press("K")  # the host presents its accepted key: nothing to confirm
        await until(pilot, lambda: [m for m in recorder.of(KerubApp.ActionDone) if m.action == "fetch host key of lab3"],
                    "K on the hosts table")
        await settle(app, pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("R")
        done = await until(pilot, lambda: [m for m in recorder.of(KerubApp.ActionDone)
                                           if m.action == "rediscover lab3"], "R on the hosts table")
        assert done[0].result.capabilities.stale == [] and not recorder.of(KerubApp.ActionFailed)


async def test_r_on_a_host_reads_its_facts_again(clean_lab, tmp_path):
    from ..integration.test_discovery_stale_lab import BROKEN_LSCPU, fake_tools

    lab_host = clean_lab.hosts[1]
    controller = Controller(tmp_path / "data")
    controller.open_store()
    recorder = Recorder()
    app = KerubApp(controller)
    async with app.run_test(size=(120, 40), message_hook=recorder) as pilot:
        await settle(app, pilot)
        host = await controller.add_host(name="lab2", address=lab_host.address, port=lab_host.port,
                                         identity=str(lab_host.client_key), fingerprint=lab_host.host_key_fingerprint)
        await until(pilot, lambda: status(controller, host.id) is HostStatus.up, "the host to be up")
        app.open_host(host.id)
        await until(pilot, lambda: isinstance(app.screen, HostDetailScreen), "the host detail")

        def rediscovered() -> list:
            return [m for m in recorder.of(KerubApp.ActionDone) if m.action == "rediscover lab2"]

        with fake_tools(lab_host, {"lscpu": BROKEN_LSCPU}):
            await pilot.press("R")
            done = await until(pilot, rediscovered, "the rediscovery with a broken lscpu")
        assert [s.section for s in done[0].result.capabilities.stale] == ["cpu"]
        await until(pilot, lambda: "facts stale" in plain(app.screen.query_one("#host-title", Static)),
                    "the detail to say the facts are stale")
        recorder.clear()
        await pilot.press("R")
        done = await until(pilot, rediscovered, "the rediscovery with lscpu fixed")
        assert done[0].result.capabilities.stale == []
        assert controller.db.get(Host, host.id).capabilities.stale == []
        await until(pilot, lambda: "facts stale" not in plain(app.screen.query_one("#host-title", Static)),
                    "the detail to say the facts are current")
