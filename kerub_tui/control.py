"""The control socket: while a controller runs on a data dir, every other kerub-tui serves through it.

One unix socket, ``control.sock`` in the data dir (0600, in a 0700 dir: only its owner can connect),
speaking JSON lines. Requests ``{"id": N, "method": M, "params": {...}}``; answers ``{"id": N,
"result": ...}`` or ``{"id": N, "error": "one line"}``. Methods:

- ``ping``: the controller's pid and data dir;
- ``cli``: run a command-line command in the controller (argv in, exit code and output out), so the
  command line has one implementation whether it runs alone or through the socket;
- ``subscribe``: every document, then every committed change, as ``{"change": ...}`` lines;
- ``call``: one controller action by name, for an attached console (``RemoteController``);
- ``serial``: a VM's serial console: after the answer line the connection carries the console's
  bytes both ways, relayed by the controller between this socket and the libvirt stream of its own
  tunnel to the VM's host (:func:`open_serial_remote`). The controller owns the one SSH connection
  per host; the client keeps the terminal. The relay ends with either side.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import inspect
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import TypeAdapter, ValidationError

from .api import REMOTE_ACTIONS, ActionError, NewDisk, guarded
from .core.bus import Change, Subscription
from .core.expectations import Expectation
from .core.models import (
    CloudInit,
    DiskLink,
    Document,
    Host,
    HostDynamic,
    Nic,
    Plan,
    Settings,
    VirtualMachine,
    VirtualStorageDevice,
    parse_document,
)
from .core.paths import SOCKET_FILE, UnsafeDataDir, check_private_dir
from .core.store import Store, StoreError
from .core.validation import describe
from .queries import StoreQueries

if TYPE_CHECKING:  # a command sent to a running controller imports no controller (nor asyncssh)
    from .controller import Controller

# What a viewer needs from the environment of whoever asked for a console (not the controller's).
DISPLAY_ENV = ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY", "XDG_RUNTIME_DIR", "KERUB_TUI_VIEWER")


def display_env() -> dict[str, str]:
    return {name: os.environ[name] for name in DISPLAY_ENV if name in os.environ}
_LINE_LIMIT = 256 * 1024 * 1024  # a snapshot of a big fleet is one line
# The largest request the server reads: a command line or an action's arguments are a few KiB.
# A longer line is refused with an answer, and the server never holds more than twice this.
REQUEST_LIMIT = 4 * 1024 * 1024

log = logging.getLogger(__name__)


def socket_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / SOCKET_FILE


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a connected unix socket (Linux SO_PEERCRED)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


def connect(data_dir: Path | str) -> socket.socket | None:
    """A connection to the controller on the data dir, or None when none answers (no socket, a stale one).

    Nothing is sent before it is known whose it is: the data dir and the socket file must be ours
    (core.paths.check_private_dir: no symlink, no other user's file, nothing writable by others), and
    the process serving the socket must run as us or as root (SO_PEERCRED). Otherwise StoreError says
    what is wrong: a socket planted by another user would receive our commands and secrets."""
    path = socket_path(data_dir)
    try:
        if not check_private_dir(Path(data_dir)):
            return None
    except UnsafeDataDir as error:
        raise StoreError(str(error)) from None
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(2)
        sock.connect(str(path))
        sock.settimeout(None)
    except OSError:
        sock.close()
        return None
    uid = peer_uid(sock)
    if uid is not None and uid not in (os.geteuid(), 0):
        sock.close()
        raise StoreError(f"the control socket {path} is served by a process of another user (uid {uid}): "
                         "nothing was sent to it; stop that process and remove the socket, or use a data dir "
                         "of your own")
    return sock


def controller_running(data_dir: Path | str) -> bool:
    """True if a controller answers on the data dir's socket (a stale socket file does not count).
    StoreError if the dir or the socket is not safely ours (see connect)."""
    sock = connect(data_dir)
    if sock is None:
        return False
    sock.close()
    return True


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode()}
    if isinstance(value, Document):
        return {"__document__": value.model_dump(mode="json")}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__document__"}:
            return parse_document(value["__document__"])
        if set(value) == {"__bytes__"} and isinstance(value["__bytes__"], str):
            return base64.b64decode(value["__bytes__"], validate=True)
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _change_message(change: Change) -> dict[str, Any]:
    return {"change": {"kind": change.kind, "id": change.id,
                       "new": change.new.model_dump(mode="json") if change.new is not None else None}}


# --- server -----------------------------------------------------------------------------------


CliRunner = Callable[..., Awaitable[tuple[int, str, str]]]  # (argv, controller, env, cwd=, *, progress, peer_uid)
# A password never travels through the socket (issue 17 item 3): a request carrying one is refused
# before anything runs; `host add --install-key` uses the password in the process it was typed in.
SECRET_PARAMETERS = frozenset({"password", "secret"})
NO_SECRETS = ("a password never travels through the control socket: nothing was run "
              "(host add --install-key asks for it and uses it in the command line's own process)")


class ControlServer:
    """Serves the socket for a running controller. ``cli_runner`` runs one command line in-process."""

    def __init__(self, controller: Controller, cli_runner: CliRunner) -> None:
        self.controller = controller
        self.cli_runner = cli_runner
        self.path = socket_path(controller.data_dir)
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        if controller_running(self.controller.data_dir):
            raise StoreError(f"another controller already serves {self.path}")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # stale, from a controller that was killed
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=REQUEST_LIMIT)
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            for task in list(self._connections):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        subscription: Subscription | None = None
        pump: asyncio.Task[Any] | None = None
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than REQUEST_LIMIT: what follows cannot be trusted either
                    await _send(writer, {"id": None, "error": f"request refused: longer than "
                                                              f"{REQUEST_LIMIT >> 20} MiB; the connection is closed"})
                    break
                if not line:
                    break
                try:
                    req_id, method, params = _parse_request(line)
                except BadRequest as error:
                    await _send(writer, {"id": None, "error": f"malformed request: {error}"})
                    continue
                if method == "subscribe":
                    if subscription is not None:
                        await _send(writer, {"id": req_id, "error": "already subscribed on this connection"})
                        continue
                    # Subscribe before the snapshot is taken: no change can fall between the two.
                    subscription = self.controller.subscribe()
                    docs = [d.model_dump(mode="json") for d in self.controller.db.all_documents()]
                    await _send(writer, {"id": req_id, "result": {"documents": docs,
                                                                   "readonly": self.controller.readonly,
                                                                   "live": self.controller.live}})
                    pump = asyncio.create_task(self._pump(subscription, writer))
                    continue
                if method == "serial":
                    if subscription is not None:
                        await _send(writer, {"id": req_id, "error": "a serial console needs a connection of its own"})
                        continue
                    await self._serial(req_id, params, reader, writer)
                    break  # the connection was the console's: it ends with it
                await _send(writer, await self._answer(req_id, method, params, _Caller(req_id, reader, writer)))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if subscription is not None:
                subscription.close()
            if pump is not None:
                pump.cancel()
            writer.close()
            self._connections.discard(task)

    async def _answer(self, req_id: Any, method: str, params: dict[str, Any],
                      caller: _Caller | None = None, *, local: bool = False) -> dict[str, Any]:
        """The reply to one request: its result, or one line saying why not. Never an exception:
        whatever a client sends, it gets an answer and the controller keeps serving. ``local``: the
        server's own call (the result stays a Python object, and actions not served remotely may run)."""
        try:
            result = await self._dispatch(method, params, caller, local=local)
            return {"id": req_id, "result": result if local else _encode(result)}
        except (ActionError, StoreError, BadRequest) as error:
            message = str(error)
        except ValidationError as error:
            message = describe(error)
        except ValueError as error:  # pydantic's ValidationError among them
            message = _first_line(error)
        except OSError as error:
            message = (error.strerror or str(error)) + (f": {error.filename}" if error.filename else "")
        except Exception as error:  # a bug; the details go to the controller's log, not to the client
            log.error("control socket: %s failed: %s: %s", method, type(error).__name__, _first_line(error))
            log.debug("details", exc_info=True)
            message = f"internal error in the controller: {type(error).__name__}: {_first_line(error)}"
        return {"id": req_id, "error": " ".join(message.split())}

    async def _serial(self, req_id: Any, params: dict[str, Any], reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        """Answer a ``serial`` request, then relay the console until either side ends."""
        vm, view_only, force = params.get("vm"), params.get("view_only", False), params.get("force", False)
        if not isinstance(vm, str) or not isinstance(view_only, bool) or not isinstance(force, bool):
            await _send(writer, {"id": req_id, "error": "serial: vm must be text, view_only and force true or false"})
            return
        answer = await self._answer(req_id, "call", {"name": "open_serial", "args": [vm],
                                                     "kwargs": {"view_only": view_only, "force": force}},
                                    local=True)
        stream = answer.pop("result", None)
        if stream is None:
            await _send(writer, answer)
            return
        try:
            view_only = view_only or bool(getattr(stream, "view_only", self.controller.readonly))
            await _send(writer, {"id": req_id, "result": {"description": stream.description, "view_only": view_only}})

            async def keys() -> None:
                while data := await reader.read(64 * 1024):
                    if not view_only:  # the stream drops them too; nothing typed goes further
                        await stream.write(data)

            async def screen() -> None:
                while data := await stream.read():
                    writer.write(data)
                    await writer.drain()

            tasks = [asyncio.create_task(keys()), asyncio.create_task(screen())]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(BaseException):
                        await task
        finally:
            await stream.close()

    async def _pump(self, subscription: Subscription, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            async for change in subscription:
                await _send(writer, _change_message(change))

    async def _dispatch(self, method: str, params: dict[str, Any], caller: _Caller | None = None, *,
                        local: bool = False) -> Any:
        if method == "ping":
            return {"pid": os.getpid(), "data_dir": str(self.controller.data_dir)}
        if method == "cli":
            argv = params.get("argv")
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise ValueError("cli: argv must be a list of strings")
            controller = self.controller
            if params.get("readonly"):
                controller = copy.copy(controller)
                controller.readonly = True
            env = params.get("env") or {}
            if not isinstance(env, dict) or not all(k in DISPLAY_ENV and isinstance(v, str) for k, v in env.items()):
                raise ValueError("cli: env may only carry " + ", ".join(DISPLAY_ENV))
            if "secret" in params:
                raise BadRequest(f"cli: {NO_SECRETS}")
            extra = {} if caller is None else {"progress": caller.progress, "peer_uid": caller.uid}
            cwd = params.get("cwd")
            if cwd is not None and not (isinstance(cwd, str) and os.path.isabs(cwd) and "\0" not in cwd):
                raise BadRequest("cli: cwd must be an absolute path")
            code, out, err = await self.cli_runner(argv, controller, env, cwd=cwd, **extra)
            return {"exit": code, "stdout": out, "stderr": err}
        if method == "call":
            name = params.get("name")
            served = REMOTE_ACTIONS | ({"open_serial"} if local else set())
            if not isinstance(name, str) or name not in served or not hasattr(self.controller, name):
                raise ValueError(f"unknown action {name!r}")
            args = _decode(params.get("args") or [])
            kwargs = _decode(params.get("kwargs") or {})
            if not isinstance(args, list) or not isinstance(kwargs, dict):
                raise BadRequest(f"{name}: args must be a list and kwargs an object")
            carried = SECRET_PARAMETERS & set(kwargs)
            if carried:
                raise BadRequest(f"{name}: {NO_SECRETS} ({', '.join(sorted(carried))} refused)")
            action = getattr(self.controller, name)
            _check_arguments(name, action, args, kwargs)
            result = action(*args, **kwargs)
            if asyncio.iscoroutine(result):
                result = await result
            return result
        raise ValueError(f"unknown method {method!r}")


class CallerGone(ActionError):
    """The client that asked for a long command (an image import) closed its end: stop the command."""


class _Caller:
    """Who sent one request: progress lines go back to it (``{"id": N, "progress": LINE}``) while
    its command runs, and a client that went away stops the command at its next progress report."""

    def __init__(self, req_id: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.req_id = req_id
        self.reader = reader
        self.writer = writer
        uid = peer_uid(writer.get_extra_info("socket"))
        self.uid = -1 if uid is None else uid

    def progress(self, line: str) -> None:
        if self.reader.at_eof() or self.writer.is_closing():
            raise CallerGone("the client that asked for it went away")
        self.writer.write(json.dumps({"id": self.req_id, "progress": line}, separators=(",", ":")).encode() + b"\n")


class BadRequest(Exception):
    """A request the server cannot take (not JSON, not an object, wrong arguments): one line back."""


def _no_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a number JSON allows")


def _parse_request(line: bytes) -> tuple[Any, str, dict[str, Any]]:
    try:
        request = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, nested past reason
        raise BadRequest(f"not JSON ({type(error).__name__})") from None
    if not isinstance(request, dict):
        raise BadRequest("a request is a JSON object")
    req_id = request.get("id")
    if isinstance(req_id, bool) or not (req_id is None or isinstance(req_id, (int, str))):
        raise BadRequest("id must be a number or text")
    method = request.get("method")
    if not isinstance(method, str):
        raise BadRequest("no method")
    params = request.get("params") or {}
    if not isinstance(params, dict):
        raise BadRequest("params must be an object")
    return req_id, method, params


def _check_arguments(name: str, action: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> None:
    """Refuse arguments the action does not take, or of the wrong type (a mapping where a name goes),
    before the action runs: a client's mistake is its error, never a crash in the controller."""
    try:
        signature = inspect.signature(action, eval_str=True)
    except (NameError, TypeError, ValueError):  # pragma: no cover - an annotation we cannot resolve
        signature = inspect.signature(action)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        raise BadRequest(f"{name}: {error}") from None
    for param, value in bound.arguments.items():
        parameter = signature.parameters[param]
        annotation = parameter.annotation
        if annotation in (inspect.Parameter.empty, Any) or isinstance(annotation, str):
            continue
        values = (value.values() if parameter.kind is parameter.VAR_KEYWORD
                  else value if parameter.kind is parameter.VAR_POSITIONAL else [value])
        for item in values:
            try:
                _adapter(annotation).validate_python(item)
            except ValidationError as error:
                raise BadRequest(f"{name}: {param} {describe(error)}") from None


@functools.lru_cache(maxsize=256)
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


async def _send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    await writer.drain()


# --- clients ----------------------------------------------------------------------------------


def run_cli_remote(data_dir: Path | str, argv: list[str], readonly: bool = False,
                   progress: Callable[[str], None] | None = None) -> tuple[int, str, str]:
    """Run a command line in the data dir's controller. Blocking: the command line has no loop.
    No secret ever goes through the socket: a password stays in the process it was typed in.
    ``progress`` gets the progress lines the command sends while it runs."""
    sock = connect(data_dir)
    if sock is None:
        raise StoreError(f"no controller answers on {socket_path(data_dir)} any more")
    with sock:
        request = {"id": 1, "method": "cli",
                   "params": {"argv": argv, "readonly": readonly, "env": display_env(), "cwd": os.getcwd()}}
        sock.sendall(json.dumps(request).encode() + b"\n")
        with sock.makefile("rb") as stream:
            while True:
                line = stream.readline()
                if not line:
                    break
                message = json.loads(line)
                if isinstance(message, dict) and "progress" in message and "result" not in message:
                    if progress is not None:
                        progress(str(message["progress"]))
                    continue
                break
    if not line:
        raise StoreError(f"the controller on {data_dir} closed the control socket without answering")
    reply = json.loads(line)
    if "error" in reply:
        raise StoreError(reply["error"])
    result = reply["result"]
    return int(result["exit"]), result["stdout"], result["stderr"]


async def cli_remote(data_dir: Path | str, argv: list[str],
                     progress: Callable[[str], None] | None = None) -> tuple[int, str, str]:
    """run_cli_remote for a caller with a loop (a console): on a connection of its own, without
    blocking the loop; ``progress`` gets the command's progress lines on the loop's thread."""
    sock = connect(data_dir)
    if sock is None:
        raise ActionError(f"no controller answers on {socket_path(data_dir)} any more")
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=_LINE_LIMIT)
    try:
        await _send(writer, {"id": 1, "method": "cli", "params": {"argv": argv, "env": display_env(),
                                                                    "cwd": os.getcwd()}})
        while line := await reader.readline():
            message = json.loads(line)
            if isinstance(message, dict) and "progress" in message and "result" not in message:
                if progress is not None:
                    progress(str(message["progress"]))
                continue
            break
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if not line:
        raise ActionError("the controller closed the control socket without answering")
    if "error" in message:
        raise ActionError(message["error"])
    result = message["result"]
    return int(result["exit"]), result["stdout"], result["stderr"]


class SocketConsole:
    """A serial console relayed by the controller through a control socket connection of its own
    (the ``serial`` method): a core.terminal.ByteStream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, description: str,
                 view_only: bool) -> None:
        self._reader = reader
        self._writer = writer
        self.description = description
        self.view_only = view_only

    async def read(self) -> bytes:
        try:
            return await self._reader.read(64 * 1024)
        except ConnectionError:
            return b""

    async def write(self, data: bytes) -> None:
        if self.view_only or self._writer.is_closing():
            return
        try:
            self._writer.write(data)
            await self._writer.drain()
        except ConnectionError:
            pass

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


async def open_serial_remote(data_dir: Path | str, vm_ref: str, *, view_only: bool = False,
                             force: bool = False) -> SocketConsole:
    """The serial console of a VM, relayed by the controller running on ``data_dir`` (ActionError
    with its one line when it refuses)."""
    sock = connect(data_dir)
    if sock is None:
        raise ActionError(f"no controller answers on {socket_path(data_dir)} any more")
    reader, writer = await asyncio.open_unix_connection(sock=sock, limit=REQUEST_LIMIT)
    try:
        await _send(writer, {"id": 1, "method": "serial",
                             "params": {"vm": vm_ref, "view_only": view_only, "force": force}})
        line = await reader.readline()
        if not line:
            raise ActionError("the controller closed the control socket without answering")
        answer = json.loads(line)
        if "error" in answer:
            raise ActionError(str(answer["error"]))
        result = answer["result"]
    except BaseException:
        writer.close()
        raise
    return SocketConsole(reader, writer, str(result["description"]), bool(result["view_only"]) or view_only)


@guarded
class RemoteController(StoreQueries):
    """The console API (:class:`kerub_tui.api.ConsoleAPI`), served by another process through its
    control socket.

    Its queries read a live read-only mirror of that controller's store (same read API, same change
    feed), so a console attached this way shows exactly what a console embedding the controller
    shows; its actions are calls through the socket, refused here first in read-only mode (the
    registry of kerub_tui.api says which). Quitting it (``stop``) leaves the controller running.
    """

    attached = True

    def __init__(self, data_dir: Path | str, *, readonly: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.readonly = readonly
        self.store: Store | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._read_task: asyncio.Task[Any] | None = None
        self.disconnected = asyncio.Event()
        self.started = False
        self._live = True

    async def start(self) -> None:
        sock = connect(self.data_dir)
        if sock is None:
            raise StoreError(f"no controller answers on {socket_path(self.data_dir)}")
        self._reader, self._writer = await asyncio.open_unix_connection(sock=sock, limit=_LINE_LIMIT)
        await _send(self._writer, {"id": 0, "method": "subscribe"})
        first = json.loads(await self._reader.readline())
        if "error" in first:
            raise StoreError(first["error"])
        docs = [parse_document(d) for d in first["result"]["documents"]]
        self.store = Store.mirror(self.data_dir, docs)
        self.readonly = self.readonly or bool(first["result"].get("readonly"))
        self._live = bool(first["result"].get("live", True))  # a read-only `serve` monitors nothing
        self._read_task = asyncio.create_task(self._read_loop(), name="control-socket-reader")
        self.started = True

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while line := await self._reader.readline():
                message = json.loads(line)
                if "change" in message:
                    change = message["change"]
                    new = parse_document(change["new"]) if change["new"] is not None else None
                    assert self.store is not None
                    self.store.apply(change["kind"], change["id"], new)
                    continue
                future = self._pending.pop(message.get("id"), None)
                if future is not None and not future.done():
                    if "error" in message:
                        future.set_exception(ActionError(message["error"]))
                    else:
                        future.set_result(_decode(message.get("result")))
        except (ConnectionError, ValueError):
            pass
        finally:
            self.disconnected.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ActionError("the controller went away (control socket closed)"))
            self._pending.clear()

    async def stop(self) -> None:
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._read_task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self.store is not None:
            self.store.feed.close()
        self.started = False

    @property
    def db(self) -> Store:
        if self.store is None:
            raise ActionError("not attached")
        return self.store

    def subscribe(self, kinds: Iterable[str] | None = None) -> Subscription:
        return self.db.feed.subscribe(kinds)

    @property
    def runs_plans(self) -> bool:
        return True  # the controller this console is attached to runs them

    @property
    def live(self) -> bool:
        return self._live

    async def _call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        if self.disconnected.is_set() or self._writer is None:
            raise ActionError("the controller went away (control socket closed)")
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        await _send(self._writer, {"id": self._next_id, "method": "call",
                                   "params": {"name": name, "args": _encode(list(args)), "kwargs": _encode(kwargs)}})
        return await future

    # --- the actions, through the socket (kerub_tui.api declares them) -------------------------

    async def create_vm(self, name: str, *, cpus: int = 1, memory_min: int, memory_max: int | None = None,
                        architecture: str = "x86_64", disks: Iterable[DiskLink | dict[str, Any]] = (),
                        nics: Iterable[Nic | dict[str, Any]] = (),
                        expectations: Iterable[str | dict[str, Any] | Expectation] = (),
                        disk_sizes: Iterable[int] = (), cdrom: str | None = None,
                        boot: Iterable[str] | None = None, from_image: str | None = None,
                        cloud_init: CloudInit | dict[str, Any] | None = None,
                        new_disks: Iterable[NewDisk | dict[str, Any]] = (),
                        graphics: Literal["spice", "vnc"] = "spice") -> VirtualMachine:
        return cast(VirtualMachine, await self._call(
            "create_vm", name, cpus=cpus, memory_min=memory_min, memory_max=memory_max,
            architecture=architecture, disks=list(disks), nics=list(nics), expectations=list(expectations),
            disk_sizes=list(disk_sizes), cdrom=cdrom, boot=None if boot is None else list(boot),
            from_image=from_image, cloud_init=cloud_init, new_disks=list(new_disks), graphics=graphics))

    async def update_vm(self, ref: str, *, new_disks: Iterable[NewDisk | dict[str, Any]] = (),
                        **changes: Any) -> VirtualMachine:
        return cast(VirtualMachine, await self._call("update_vm", ref, new_disks=list(new_disks), **changes))

    async def set_vm_availability(self, ref: str, up: bool, level: str = "dealbreaker") -> VirtualMachine:
        return cast(VirtualMachine, await self._call("set_vm_availability", ref, up, level))

    async def delete_vm(self, ref: str, *, disks: Literal["keep", "delete"] | None = None) -> list[str]:
        return cast(list[str], await self._call("delete_vm", ref, disks=disks))

    async def eject_vm(self, ref: str) -> VirtualMachine:
        return cast(VirtualMachine, await self._call("eject_vm", ref))

    async def reboot_vm(self, ref: str) -> str:
        return str(await self._call("reboot_vm", ref))

    async def reset_vm(self, ref: str) -> str:
        return str(await self._call("reset_vm", ref))

    async def poweroff_vm(self, ref: str, *, force: bool = False) -> str:
        return str(await self._call("poweroff_vm", ref, force=force))

    async def pause_vm(self, ref: str) -> str:
        return str(await self._call("pause_vm", ref))

    async def resume_vm(self, ref: str) -> str:
        return str(await self._call("resume_vm", ref))

    async def send_keys(self, ref: str, keys: Sequence[str]) -> str:
        return str(await self._call("send_keys", ref, keys.split() if isinstance(keys, str) else list(keys)))

    async def clone_vm(self, source_ref: str, name: str) -> VirtualMachine:
        return cast(VirtualMachine, await self._call("clone_vm", source_ref, name))

    async def set_vm_cloud_init(self, ref: str, cloud_init: CloudInit | dict[str, Any] | None) -> VirtualMachine:
        return cast(VirtualMachine, await self._call("set_vm_cloud_init", ref, cloud_init))

    async def create_disk(self, name: str, *, size: int, read_only: bool = False,
                          expectations: Iterable[str | dict[str, Any] | Expectation] = ()) -> VirtualStorageDevice:
        return cast(VirtualStorageDevice, await self._call("create_disk", name, size=size, read_only=read_only,
                                                           expectations=list(expectations)))

    async def update_disk(self, ref: str, **changes: Any) -> VirtualStorageDevice:
        return cast(VirtualStorageDevice, await self._call("update_disk", ref, **changes))

    async def delete_disk(self, ref: str) -> None:
        await self._call("delete_disk", ref)

    async def import_image(self, path: str | None = None, *, name: str | None = None, host: str | None = None,
                           from_host: str | None = None, from_path: str | None = None,
                           expected_file: tuple[int, int] | None = None,
                           progress: Callable[[Any], None] | None = None) -> VirtualStorageDevice:
        """``image import`` by the controller, as the command line asks for it: on a connection of its
        own (an import takes minutes; this console's connection keeps serving), the file named by its
        absolute path here and checked by opening it (the controller reads that file, of that device
        and inode, or refuses), its progress lines handed to ``progress``. The imported image once this
        console's mirror holds it."""
        if path is None or from_path is not None or expected_file is not None:
            raise ActionError("an attached console imports a file of its own machine: "
                              "kerub-tui image import --from HOST:PATH copies one on a host")
        path = os.path.abspath(os.path.expanduser(path))
        try:
            with open(path, "rb") as stream:
                info = os.fstat(stream.fileno())
        except OSError as error:
            raise ActionError(f"cannot read {path}: {error.strerror or error}") from None
        argv = ["image", "import", path, "--client-file", path, "--client-file-id", f"{info.st_dev}:{info.st_ino}"]
        argv += [*(["--name", name] if name else []), *(["--host", host] if host else [])]
        code, out, err = await cli_remote(self.data_dir, argv, progress=progress)
        if code != 0:
            lines = err.strip().splitlines() or ["the import failed"]
            raise ActionError(lines[-1].removeprefix("kerub-tui: "))
        imported = name or next((line.split()[2] for line in out.splitlines() if line.startswith("imported image ")),
                                None)
        for _ in range(500):  # the change feed carries the new documents to the mirror soon after the answer
            image = self.db.find_by_name(VirtualStorageDevice, imported) if imported else None
            if image is not None or self.disconnected.is_set():
                break
            await asyncio.sleep(0.02)
        if image is None:
            raise ActionError(f"the controller imported {imported}, but this console has not seen it yet")
        return image

    async def delete_image(self, ref: str) -> None:
        await self._call("delete_image", ref)

    async def decide_plan(self, ref: str, approve: bool) -> Plan:
        return cast(Plan, await self._call("decide_plan", ref, approve))

    async def ask_again_plan(self, ref: str) -> Plan:
        return cast(Plan, await self._call("ask_again_plan", ref))

    async def set_auto_approve(self, plan_kind: str, enabled: bool, *, deletes: bool = False) -> Settings:
        return cast(Settings, await self._call("set_auto_approve", plan_kind, enabled, deletes=deletes))

    async def set_optimisation(self, **changes: Any) -> Settings:
        return cast(Settings, await self._call("set_optimisation", **changes))

    async def set_retention(self, *, audit_days: int | None = None, event_days: int | None = None) -> Settings:
        return cast(Settings, await self._call("set_retention", audit_days=audit_days, event_days=event_days))

    async def fetch_host_key(self, address: str, port: int | None = None) -> tuple[str, str]:
        key, fingerprint = await self._call("fetch_host_key", address, port)
        return str(key), str(fingerprint)

    async def add_host(self, *, name: str, address: str, port: int | None = None, user: str | None = None,
                       identity: str | None = None, fingerprint: str, dedicated: bool = False,
                       password: str | None = None) -> Host:
        if password is not None:  # a password never goes through the socket
            raise ActionError("an attached console cannot install kerub-tui's key with a password: run "
                              "kerub-tui host add ADDRESS --install-key")
        return cast(Host, await self._call("add_host", name=name, address=address, port=port, user=user,
                                           identity=identity, fingerprint=fingerprint, dedicated=dedicated))

    async def remove_host(self, ref: str) -> None:
        await self._call("remove_host", ref)

    async def evacuate_host(self, ref: str) -> Host:
        return cast(Host, await self._call("evacuate_host", ref))

    async def fence_host(self, ref: str, *, confirm_off: bool = False) -> HostDynamic:
        return cast(HostDynamic, await self._call("fence_host", ref, confirm_off=confirm_off))

    async def set_vm_ha(self, ref: str, enabled: bool, level: str = "dealbreaker") -> VirtualMachine:
        return cast(VirtualMachine, await self._call("set_vm_ha", ref, enabled, level))

    async def set_ha_policy(self, *, copy_max_age_minutes: int | None = None,
                            restart_from_stale_copies: bool | None = None) -> Settings:
        return cast(Settings, await self._call("set_ha_policy", copy_max_age_minutes=copy_max_age_minutes,
                                               restart_from_stale_copies=restart_from_stale_copies))

    async def update_host(self, ref: str, **changes: Any) -> Host:
        return cast(Host, await self._call("update_host", ref, **changes))

    async def set_host_accel(self, ref: str, accel: str) -> Host:
        return cast(Host, await self._call("set_host_accel", ref, accel))

    async def rekey_host(self, ref: str, fingerprint: str, *, timeout: float = 120.0) -> Host:
        return cast(Host, await self._call("rekey_host", ref, fingerprint, timeout=timeout))

    async def rediscover_host(self, ref: str, *, timeout: float = 120.0) -> Host:
        return cast(Host, await self._call("rediscover_host", ref, timeout=timeout))

    async def open_console(self, vm_ref: str, *, viewer: str | None = None, env: dict[str, str] | None = None,
                           wait: bool = False) -> str:
        # The viewer shows on this console's display, not the controller's.
        return str(await self._call("open_console", vm_ref, viewer=viewer,
                                    env=display_env() if env is None else env, wait=wait))

    async def console_file(self, vm_ref: str, *, local_port: int | None = None) -> str:
        return str(await self._call("console_file", vm_ref, local_port=local_port))

    async def execute_now(self, plan_id: str, *, connect_timeout: float = 120.0) -> Plan:
        raise ActionError("the controller this console is attached to runs approved plans by itself")

    async def export_documents(self, path: str) -> int:
        """``export`` run by the controller (it holds the store), into ``path`` made absolute here."""
        path = os.path.abspath(os.path.expanduser(path))
        code, out, err = await cli_remote(self.data_dir, ["export", path])
        if code != 0:
            lines = err.strip().splitlines() or ["the export failed"]
            raise ActionError(lines[-1].removeprefix("kerub-tui: "))
        return int(out.split()[1])  # "exported N documents to PATH"

    async def import_documents(self, path: str, *, replace: bool = False) -> int:
        raise ActionError("import needs the controller stopped: stop the kerub-tui running on "
                          f"{self.data_dir} first")


    async def open_serial(self, vm_ref: str, *, view_only: bool = False, force: bool = False) -> SocketConsole:
        # On a connection of its own: the controller relays the console between it and its tunnel.
        return await open_serial_remote(self.data_dir, vm_ref, view_only=view_only or self.readonly, force=force)

    async def screenshot(self, vm_ref: str, *, connect: bool = True) -> bytes:
        png = await self._call("screenshot", vm_ref, connect=connect)
        if not isinstance(png, bytes):
            raise ActionError("the controller answered the screenshot with something else than an image")
        return png

    async def explain(self, vm_ref: str) -> str:
        return str(await self._call("explain", vm_ref))
