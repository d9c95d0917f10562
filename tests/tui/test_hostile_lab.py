"""Against the lab: a host whose lscpu, dmidecode, os-release and findmnt print hostile text (markup,
escape sequences, 30 MB) is discovered by the real product; its facts are stored bounded and shown
as data in the console's host detail and every other screen."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from textual.widgets import Static

from kerub_tui.app import KerubApp
from kerub_tui.controller import Controller
from kerub_tui.core.models import Event, Host
from kerub_tui.hosts.facts import TEXT_LIMIT

from ..integration.test_discovery_stale_lab import fake_tools
from .helpers import plain, settle
from .test_hostile import LINK, assert_safe

pytestmark = pytest.mark.lab

SAMPLES = Path(__file__).resolve().parents[1] / "captures" / "discovery" / "samples"
MODEL = "Evil(R) [/] " + LINK + " \x1b[2J\x1b]8;;https://evil.example/\x07CPU\x1b]8;;\x07 \x9b31m" + "X" * 5000
VENDOR = "[bold red]Vendor[/bold] [@click=app.quit]quit"
MAKER = "[/] Maker " + LINK
OS_NAME = "[/bold] Debian [link=https://evil.example/]GNU/Linux[/link]"


def hostile_tools(host) -> dict[str, str]:
    """Fake lscpu (hostile model and vendor; the real one for the cache detail), dmidecode (a real
    format with markup in it), and findmnt printing 30 MB of markup and escapes."""
    real = json.loads(host.run("LC_ALL=C /usr/bin/lscpu -J", check=True).stdout)
    for entry in real["lscpu"]:
        if entry["field"] == "Model name:":
            entry["data"] = MODEL
        elif entry["field"] == "Vendor ID:":
            entry["data"] = VENDOR
    lscpu_json = host.dir / "hostile-lscpu.json"
    lscpu_json.write_text(json.dumps(real))
    dmi = host.dir / "hostile-dmidecode.txt"
    dmi.write_text((SAMPLES / "dmidecode-server.SAMPLE.txt").read_text().replace("Dell Inc.", MAKER))
    os_release = host.dir / "hostile-os-release"
    os_release.write_text(f"ID=debian\nVERSION_ID=12\nPRETTY_NAME={shlex.quote(OS_NAME)}\n")
    host.run(f"mount --bind {shlex.quote(str(os_release))} /usr/lib/os-release", check=True)
    return {
        "lscpu": "#!/bin/sh\n"
                 'case " $* " in *" -C "*) exec /usr/bin/lscpu "$@";; esac\n'
                 f"cat {shlex.quote(str(lscpu_json))}\n",
        "dmidecode": f"#!/bin/sh\ncat {shlex.quote(str(dmi))}\n",
        "findmnt": "#!/bin/sh\n"
                   "yes '[/][link=https://evil.example/]\x1b[31m\x1b]0;title\x07' | head -c 30000000\n",
    }


async def test_hostile_host_output_is_discovered_stored_bounded_and_shown_as_data(clean_lab, tmp_path):
    host = clean_lab.hosts[2]
    controller = Controller(tmp_path / "data")
    await controller.start()
    try:
        added = await controller.add_host(name=host.name, address=host.address, port=host.port, user="root",
                                          identity=str(host.client_key), fingerprint=host.host_key_fingerprint)
        good = added.capabilities
        try:
            with fake_tools(host, hostile_tools(host)):
                await controller.fleet.rediscover(added.id)
        finally:
            host.run("umount /usr/lib/os-release")
        stored = controller.db.get(Host, added.id)
        caps = stored.capabilities
        # stored as data: visible escapes, bounded
        assert caps.cpu.model.startswith("Evil(R) [/] " + LINK + " \\x1b[2J\\x1b]8;;https://evil.example/\\x07CPU")
        assert "\x1b" not in caps.cpu.model and len(caps.cpu.model) < 2 * TEXT_LIMIT
        assert caps.cpu.vendor == VENDOR and caps.cpu.cpus == good.cpu.cpus
        assert caps.dmi is not None and caps.dmi.system_manufacturer == MAKER
        assert caps.os.pretty_name == OS_NAME
        # the 30 MB findmnt was not read: its section keeps the last good reading, stale
        assert [s.section for s in caps.stale] == ["filesystems"] and caps.filesystems == good.filesystems
        assert "printed more than" in caps.stale[0].reason
        assert len(stored.model_dump_json()) < 200_000
        assert any(e.type == "facts-stale" for e in controller.db.list(Event) if e.host_id == added.id)

        app = KerubApp(controller)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            assert_safe(app, "hosts")
            await pilot.press("enter")
            await settle(app, pilot)
            assert type(app.screen).__name__ == "HostDetailScreen"
            assert_safe(app, "host detail")
            shown = plain(app.screen.query_one("#host-capabilities", Static))
            assert "Evil(R) [/] [link=https://evil.example/]click me[/link] \\x1b[2J" in shown
            assert "[/] Maker [link=" in shown and "[/bold] Debian [link=" in shown
            assert "filesystems: last good reading of" in shown
            await pilot.press("escape", "colon", *"events", "enter")
            await settle(app, pilot)
            assert_safe(app, "events")
            assert app.is_running
    finally:
        await controller.stop()
