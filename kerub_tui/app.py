"""The Textual application: the console.

It takes any object with the console API (kerub_tui.api.ConsoleAPI: the embedded ``Controller``, or a
``RemoteController`` attached to a running ``kerub-tui serve`` through the control socket), follows its
change feed, and hands every coalesced batch of changes to the screens. The controller never imports
the console, and the console knows no controller class: only the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget

from .api import ActionError, ConsoleAPI, ReadOnlyMode, Script, refusal
from .core.bus import Change, Subscription
from .core.models import Plan, PlanStatus
from .core.store import StoreError
from .core.text import printable
from .screens.actions import ConsoleActions
from .screens.base import KerubScreen
from .screens.confirm import ConfirmScreen
from .screens.disks import DiskDetailScreen, DiskEditorScreen
from .screens.format import safe
from .screens.help import (
    HelpScreen,
    _bindings_of,
    all_binding_ids,
    iter_bindings,
    key_display,
    section_name,
)
from .screens.hosts import AddHostScreen, HostDetailScreen
from .screens.images import ImagesScreen
from .screens.keymap import Keymap, load_keymap
from .screens.live import LiveTable
from .screens.logs import AuditScreen, EventsScreen
from .screens.main import DEMO_LABEL, PANES, MainScreen
from .screens.overview import Overview
from .screens.plans import ProposalsScreen
from .screens.prompt import PromptScreen
from .screens.settings import SettingsScreen
from .screens.vms import VmDetailScreen, VmEditorScreen

log = logging.getLogger(__name__)

# Changes are coalesced for this long before the screens repaint: however fast they arrive, the
# tables take them in batches ten times a second, and a key is answered between two batches
# (bench/console.py measures it).
FLUSH_DELAY = 0.1

VIEWS = {
    "hosts": "hosts", "host": "hosts", "h": "hosts",
    "vms": "vms", "vm": "vms", "v": "vms",
    "disks": "disks", "disk": "disks", "storage": "disks", "d": "disks",
    "images": "images", "image": "images", "iso": "images", "i": "images",
    "plans": "plans", "plan": "plans", "proposals": "plans", "p": "plans",
    "audit": "audit", "a": "audit",
    "events": "events", "event": "events", "e": "events",
    "settings": "settings", "s": "settings",
    "help": "help",
    "q": "quit", "quit": "quit",
}
VIEW_NAMES = ("hosts", "vms", "disks", "images", "plans", "audit", "events", "settings", "help", "quit")
JUMP_HINT = "hosts vms disks images plans audit events settings · tab completes"
FILTER_HINT = "regex · !inverts · esc restores"


def resolve_view(text: str) -> tuple[str | None, list[str]]:
    """What ``:text`` opens: a view's name or alias, or an unambiguous prefix of them (``:pl`` is plans).
    Returns (the view or None, the views the text could still become, in VIEW_NAMES order)."""
    typed = text.strip().lower().lstrip(":")
    if typed in VIEWS:
        return VIEWS[typed], [VIEWS[typed]]
    views = {view for alias, view in VIEWS.items() if alias.startswith(typed)} if typed else set()
    candidates = [name for name in VIEW_NAMES if name in views]
    return (candidates[0] if len(candidates) == 1 else None), candidates


class KerubApp(App[None]):
    TITLE = "kerub-tui"
    ENABLE_COMMAND_PALETTE = True

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q,ctrl+q", "quit", "Quit", id="app.quit"),
        # k9s' habit: ctrl+c quits from anywhere (a field too), asking first when something would be lost.
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="app.quit_anywhere"),
        Binding("colon", "jump", "Jump", id="app.jump"),
        Binding("question_mark", "help", "Keys", id="app.help"),
        Binding("P", "newest_proposal", "Newest proposal", show=False, id="app.newest_proposal"),
        Binding("ctrl+p", "command_palette", "Palette", show=False, priority=True, id="app.palette"),
    ]

    CSS = """
    Footer { height: 1; }
    """

    class ActionRefused(Message):
        """An action was not run: read-only mode, or it does not apply."""

        def __init__(self, action: str, reason: str) -> None:
            super().__init__()
            self.action = action
            self.reason = reason

    class ActionDone(Message):
        def __init__(self, action: str, result: Any) -> None:
            super().__init__()
            self.action = action
            self.result = result

    class ActionFailed(Message):
        def __init__(self, action: str, error: str) -> None:
            super().__init__()
            self.action = action
            self.error = error

    class Jumped(Message):
        def __init__(self, view: str) -> None:
            super().__init__()
            self.view = view

    class ChangesApplied(Message):
        def __init__(self, count: int) -> None:
            super().__init__()
            self.count = count

    def __init__(self, controller: ConsoleAPI, *, keymap_file: Path | None = None, demo: bool = False,
                 tour: Script | None = None) -> None:
        """``demo`` labels the console as the demo (``kerub-tui --demo``); ``tour`` is the demo's
        scripted part, run while the console is open."""
        super().__init__()
        self.controller = controller
        self.demo = demo
        self.tour = tour
        self._tour_task: asyncio.Task[None] | None = None
        self.attached = controller.attached
        self.keymap_file = keymap_file
        self.keymap: Keymap | None = None
        self._overview: Overview | None = None
        self.actions = ConsoleActions(self)
        self.main: MainScreen | None = None
        self._pending: list[Change] = []
        self._flush_scheduled = False
        self._subscription: Subscription | None = None
        self._feed_ready = asyncio.Event()
        self._clash_reported = False
        # The : and / prompts' entries of this session, newest last (up and down walk them).
        self.prompt_history: dict[str, list[str]] = {}

    # --- lifecycle ----------------------------------------------------------------------------

    async def on_mount(self) -> None:
        # An embedded Controller may already be started by its owner; a RemoteController connects here.
        if not self.controller.started:
            try:
                await self.controller.start()
            except Exception as error:  # the console cannot run without its controller: say why
                self.exit(return_code=1, message=f"kerub-tui: {error}")
                return
        self.sub_title = f"{DEMO_LABEL} — {self.controller.data_dir}" if self.demo else str(self.controller.data_dir)
        self.keymap = load_keymap(self.keymap_file, known_ids=all_binding_ids())
        if self.keymap.bindings:
            self.set_keymap(self.keymap.bindings)
        for problem in self.keymap.problems:
            self.notify(problem, title="keymap", severity="warning", timeout=10)
        damage = self.controller.store_damage()
        if damage:  # --readonly on a damaged store: what reads is shown, and it says so
            self.notify(f"the store is damaged ({'; '.join(damage)}): showing what can be read; run "
                        f"kerub-tui --data-dir {self.controller.data_dir} check --repair",
                        title="store", severity="error", timeout=60)
        self._overview = Overview(self.controller)
        self.follow_changes()
        await self._feed_ready.wait()
        self.main = MainScreen()
        await self.push_screen(self.main)
        if self.demo:
            self.notify(f"A simulated fleet: no real host is contacted. The planner's proposals wait in :plans "
                        f"({self.key_for('table.open')} opens one, {self.key_for('plans.approve')} approves).",
                        title="kerub-tui demo", timeout=20)
        if self.tour is not None:
            self.start_tour(self.tour)

    def start_tour(self, tour: Script) -> None:
        """Run the demo's scripted events; each is told in a notification."""
        tour.say = lambda line: self.notify(line, title="demo", timeout=15)

        def ended(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                log.error("the demo tour failed", exc_info=task.exception())
                self.notify(f"the demo's script stopped: {task.exception()}", title="demo", severity="warning")

        self._tour_task = asyncio.create_task(tour.run(), name="demo-tour")
        self._tour_task.add_done_callback(ended)

    async def on_unmount(self) -> None:
        if self._tour_task is not None:
            self._tour_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._tour_task
        if self._subscription is not None:
            self._subscription.close()
        # No batch reaches the screens once the controller stops: its queries end with it.
        self._overview = None
        self._pending.clear()
        await self.controller.stop()

    @property
    def overview(self) -> Overview:
        """The screens' views over the documents (figures' history, shares, open violations); made
        once the console has its controller."""
        if self._overview is None:
            raise RuntimeError("the console has no controller yet")
        return self._overview

    # --- the change feed ----------------------------------------------------------------------

    @work(name="change-feed", group="feed", exclusive=True)
    async def follow_changes(self) -> None:
        subscription = self.controller.subscribe()
        self._subscription = subscription
        self._feed_ready.set()
        async for change in subscription:
            self._pending.append(change)
            self._pending.extend(subscription.drain_nowait())  # a burst is one wake-up, not one per change
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.set_timer(FLUSH_DELAY, self._flush_changes, name="flush-changes")

    def _flush_changes(self) -> None:
        """Hand the changes gathered since the last batch to the screens. (Not ``_flush``: that is
        Textual's own, called with each flush of a captured print.)"""
        changes, self._pending = self._pending, []
        self._flush_scheduled = False
        if not changes or self._overview is None:
            return
        self._overview.apply(changes)
        self._announce_proposals(changes)
        for screen in self.screen_stack:
            if isinstance(screen, KerubScreen) and screen.is_mounted:
                screen.apply_changes(changes)
        self.post_message(self.ChangesApplied(len(changes)))

    def _announce_proposals(self, changes: Sequence[Change]) -> None:
        """A proposal that appears (after a host failure, say) is easy to miss in a busy screen: a toast
        that names it and the key that opens it."""
        new = [c.new for c in changes if c.kind == "plan" and isinstance(c.new, Plan)
               and c.new.status is PlanStatus.proposed
               and not (isinstance(c.old, Plan) and c.old.status is PlanStatus.proposed)]
        if not new:
            return
        newest = max(new, key=lambda plan: plan.created_at)
        because = printable(newest.trigger[0] if newest.trigger else newest.plan_kind, limit=120)
        more = f" (and {len(new) - 1} more)" if len(new) > 1 else ""
        self.notify(f"New proposal: {because}{more}. {self.key_for('app.newest_proposal')} opens it.",
                    title="proposal", severity="warning", timeout=15, markup=False)

    def action_newest_proposal(self) -> None:
        """Open the plans at the newest open proposal (or at the list, when none is open)."""
        proposed = [p for p in self.controller.documents(Plan) if p.status is PlanStatus.proposed]
        newest = max(proposed, key=lambda plan: plan.created_at).id if proposed else None
        if self.main is not None:
            while self.screen is not self.main and len(self.screen_stack) > 1:
                self.pop_screen()
        self.push_screen(ProposalsScreen(newest))
        self.post_message(self.Jumped("plans"))

    async def settle(self) -> None:
        """Wait until every change published so far has reached the screens (tests, benchmarks)."""
        await self._feed_ready.wait()
        while True:
            subscription = self._subscription
            queued = subscription.pending() if subscription is not None else 0
            if not queued and not self._pending and not self._flush_scheduled:
                return
            if self._pending and not queued:
                self._flush_scheduled = False
                self._flush_changes()
                continue
            await asyncio.sleep(0.001)

    # --- keys ---------------------------------------------------------------------------------

    def key_for(self, binding_id: str) -> str:
        """How the key of a binding is shown, after the keymap."""
        for binding in iter_bindings():
            if binding.id == binding_id:
                keys = self._keymap.get(binding_id, binding.key)
                return key_display(self, keys.split(",")[0])
        return binding_id

    def handle_bindings_clash(self, clashed_bindings: set[Binding], node: DOMNode) -> None:
        if self._clash_reported:
            return
        self._clash_reported = True
        ids = ", ".join(sorted(b.id or b.action for b in clashed_bindings))
        self.notify(f"keymap: these bindings now share a key: {ids}", title="keymap", severity="warning",
                    timeout=10)

    def action_help(self) -> None:
        screen = self.screen
        if not isinstance(screen, HelpScreen):
            self.push_screen(HelpScreen(screen))

    def action_jump(self) -> None:
        def jumped(text: str | None) -> None:
            if text:
                self.jump(text)

        def preview(text: str) -> str:
            if not text.strip():
                return JUMP_HINT
            view, candidates = resolve_view(text)
            if view is not None:
                return f"→ {view}  ⏎"
            if candidates:
                return "tab: " + " ".join(candidates)
            return "no such view"

        self.push_screen(PromptScreen(":", suggestions=VIEW_NAMES, hint=JUMP_HINT, prompt_id="jump-prompt",
                                      preview=preview, completions=lambda text: resolve_view(text)[1],
                                      history=self.prompt_history.setdefault("jump", [])), jumped)

    def prompt_filter(self, table: LiveTable) -> None:
        """``/``: the filter applies as it is typed; enter keeps it, escape puts the old one back."""
        before = table.row_filter.text

        def preview(text: str) -> str:
            row_filter = table.set_filter(text)
            if row_filter.error:
                return row_filter.error
            return f"{table.row_count} of {table.total} shown" if row_filter.text else FILTER_HINT

        def filtered(text: str | None) -> None:
            if text is None:
                table.set_filter(before)
                return
            row_filter = table.set_filter(text)
            if row_filter.error:
                self.notify(row_filter.error, severity="warning")

        self.push_screen(PromptScreen("/", before, hint=FILTER_HINT, prompt_id="filter-prompt", preview=preview,
                                      history=self.prompt_history.setdefault("filter", [])), filtered)

    def would_be_lost(self) -> list[str]:
        """What quitting now would lose, one line each: an editor's unsaved changes, an action still
        running in the console, and (when this console is the controller) the plans it is running."""
        lost = [line for screen in self.screen_stack if isinstance(screen, KerubScreen)
                for line in [screen.unsaved()] if line]
        lost += [f"{worker.name}: still running, stopped half way" for worker in self.workers
                 if worker.group not in ("feed", "explain") and not worker.is_finished]
        if not self.controller.attached:
            running = [p for p in self.controller.documents(Plan) if p.status is PlanStatus.running]
            if running:
                lost.append(f"{len(running)} running plan(s): interrupted, their hosts checked at the next start")
        return lost

    async def action_quit(self) -> None:
        self.quit_asking()

    def quit_asking(self) -> None:
        """q, ctrl+q, ctrl+c, :quit: leave at once, or ask first when something would be lost."""
        if any(isinstance(screen, ConfirmScreen) and screen.quitting for screen in self.screen_stack):
            self.exit()  # asked twice (ctrl+c in the quit confirmation): the admin means it
            return
        lost = self.would_be_lost()
        if not lost:
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()

        confirm = ConfirmScreen("Quit kerub-tui?", [*lost, "Everything else is kept in the data dir."],
                                confirm_label="Quit")
        confirm.quitting = True
        self.push_screen(confirm, answered)

    def jump(self, text: str) -> bool:
        """Go to a view by name (``:hosts``, ``:vms``, ``:plans``...). False when there is no such view."""
        view, candidates = resolve_view(text)
        if view is None:
            if len(candidates) > 1:
                self.notify(f"{text.strip()!r} could be " + " or ".join(candidates) + ": type more",
                            severity="warning")
            else:
                self.notify(f"no view {text!r}: try " + ", ".join(VIEW_NAMES), severity="error")
            return False
        if view == "quit":
            self.quit_asking()
            return True
        if view == "help":
            self.action_help()
            return True
        assert self.main is not None
        while self.screen is not self.main and len(self.screen_stack) > 1:
            self.pop_screen()
        if view in PANES:
            self.main.show_pane(view)
        else:
            self.push_screen(self._view_screen(view))
        self.post_message(self.Jumped(view))
        return True

    def _view_screen(self, view: str) -> Screen[Any]:
        screens: dict[str, Callable[[], Screen[Any]]] = {
            "plans": ProposalsScreen, "audit": AuditScreen, "events": EventsScreen, "settings": SettingsScreen,
            "images": ImagesScreen,
        }
        return screens[view]()

    # --- opening screens ----------------------------------------------------------------------

    def open_add_host(self) -> None:
        if not self.refuse_readonly("add host", "add_host"):
            self.push_screen(AddHostScreen())

    def open_host(self, host_id: str) -> None:
        self.push_screen(HostDetailScreen(host_id))

    def open_vm(self, vm_id: str) -> None:
        self.push_screen(VmDetailScreen(vm_id))

    def open_disk(self, disk_id: str) -> None:
        self.push_screen(DiskDetailScreen(disk_id))

    def open_vm_editor(self, vm_id: str | None) -> None:
        if not self.refuse_readonly("edit VM" if vm_id else "new VM", "update_vm" if vm_id else "create_vm"):
            self.push_screen(VmEditorScreen(vm_id))

    def open_disk_editor(self, disk_id: str | None) -> None:
        if not self.refuse_readonly("edit disk" if disk_id else "new disk",
                                    "update_disk" if disk_id else "create_disk"):
            self.push_screen(DiskEditorScreen(disk_id))

    # --- running actions ----------------------------------------------------------------------

    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Every notification is plain text: its message often carries what a host or a command said
        (an error, a name), which is data, never markup or escape sequences (``markup`` is ignored)."""
        super().notify(safe(message), title=safe(title, limit=200), severity=severity, timeout=timeout,
                       markup=False)

    def refuse(self, action: str, reason: str) -> None:
        self.notify(reason, title=action, severity="error")
        self.post_message(self.ActionRefused(action, reason))

    def refuse_readonly(self, label: str, action: str) -> bool:
        """True (and the admin is told why, under ``label``) when read-only mode forbids the API's
        ``action``: asked before an editor opens, so nobody fills a form that cannot be saved."""
        reason = refusal(self.controller.readonly, action)
        if reason is None:
            return False
        self.refuse(label, reason)
        return True

    def perform(self, label: str, call: Callable[[], Awaitable[Any]], *, action: str,
                done_message: Callable[[Any], str] | None = None,
                after: Callable[[Any], None] | None = None,
                on_error: Callable[[str], None] | None = None, group: str = "actions") -> None:
        """Run ``call`` (the API's ``action``) in a named worker; ActionError is shown, never raised."""
        if self.refuse_readonly(label, action):
            return

        async def run() -> None:
            try:
                result = await call()
            except ReadOnlyMode as error:
                self.refuse(label, str(error))
                return
            except (ActionError, StoreError) as error:  # a refusal, a full disk: one line, no traceback
                self._failed(label, str(error), on_error)
                return
            except Exception as error:  # a bug or a lost connection must not take the console down
                log.exception("%s failed", label)
                self._failed(label, f"{type(error).__name__}: {error}", on_error)
                return
            if done_message is not None:
                self.notify(done_message(result), title=label)
            self.post_message(self.ActionDone(label, result))
            if after is not None:
                after(result)

        self.run_worker(run(), name=label, group=group, exit_on_error=False)

    def _failed(self, label: str, message: str, on_error: Callable[[str], None] | None) -> None:
        if on_error is not None:
            on_error(message)  # the screen shows it inline, next to what caused it
        else:
            self.notify(message, title=label, severity="error", timeout=10)
        self.post_message(self.ActionFailed(label, message))

    # --- command palette ----------------------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for view in ("hosts", "vms", "disks", "images", "plans", "audit", "events", "settings"):
            yield SystemCommand(f"Go to {view}", f":{view}", lambda v=view: self.jump(v))
        seen: set[str] = set()
        for node, binding in screen_bindings(screen):
            if binding.id is None or binding.id in seen or binding.id.startswith(("table.up", "table.down",
                                                                                   "table.left", "table.right",
                                                                                   "table.page", "screen.focus")):
                continue
            seen.add(binding.id)
            where = section_name(node)
            key = key_display(self, self._keymap.get(binding.id, binding.key))
            title = f"{where}: {binding.description or binding.action}"
            yield SystemCommand(title, f"key {key} · {binding.id}", self._palette_callback(node, binding))

    def _palette_callback(self, node: DOMNode, binding: Binding) -> Callable[[], Awaitable[Any]]:
        async def run() -> None:
            screen = getattr(node, "screen", None)
            if isinstance(node, LiveTable) and isinstance(screen, MainScreen) and node.id in PANES:
                screen.show_pane(node.id)  # at 80x24 the pane may be hidden behind another tab
            elif isinstance(node, Widget) and node.focusable and node.display:
                node.focus()
            await self.run_action(binding.action, node)

        return run


def screen_bindings(screen: Screen[Any]) -> Iterator[tuple[DOMNode, Binding]]:
    """Every kerub-tui binding of ``screen``, its widgets (the focused one first) and the app."""
    app = screen.app
    nodes: list[DOMNode] = []
    if screen.focused is not None:
        nodes.append(screen.focused)
    nodes += [screen, *screen.walk_children(with_self=False), app]
    seen: set[int] = set()
    for node in nodes:
        if id(node) in seen or not type(node).__module__.startswith("kerub_tui"):
            continue
        seen.add(id(node))
        for binding in _bindings_of(node):
            yield node, binding
