"""``smartctl -H -j DEVICE``: does the disk's own health check pass?

smartctl's exit status is a bit mask (bit 3: "DISK FAILING"); with -j it is repeated in the JSON
as smartctl.exit_status, so the JSON alone is enough. A device without SMART (virtio, loop) has no
smart_status: its health is unknown (None), not failing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ParseError, guarded, load_json, missing_tool, optional_str, to_int

COMMAND = "smartctl -H -j"
_DISK_FAILING = 1 << 3


@dataclass(frozen=True)
class SmartHealth:
    device: str | None
    passed: bool | None  # None: SMART not available on this device
    message: str = ""  # smartctl's own words when it could not tell

    @property
    def failing(self) -> bool:
        return self.passed is False


@guarded(COMMAND)
def parse_smart_health(text: str) -> SmartHealth:
    if isinstance(text, str) and missing_tool(text):
        return SmartHealth(device=None, passed=None, message="smartctl is not installed")
    data = load_json(text, COMMAND)
    smartctl = data.get("smartctl")
    if not isinstance(smartctl, dict):
        raise ParseError(COMMAND, "no 'smartctl' object: not smartctl JSON output")
    exit_status = to_int(smartctl.get("exit_status", 0), "exit_status", COMMAND, maximum=255)
    messages = smartctl.get("messages", [])
    if not isinstance(messages, list):
        raise ParseError(COMMAND, "'messages' is not a list")
    words = []
    for message in messages:
        if not isinstance(message, dict):
            raise ParseError(COMMAND, f"message {message!r:.80} is not an object")
        text_ = optional_str(message.get("string"), "message", COMMAND)
        if text_:
            words.append(text_)
    device_info = data.get("device", {})
    if not isinstance(device_info, dict):
        raise ParseError(COMMAND, "'device' is not an object")
    device = optional_str(device_info.get("name"), "device name", COMMAND)
    if device is None:
        argv = smartctl.get("argv")
        if isinstance(argv, list) and argv and isinstance(argv[-1], str) and argv[-1].startswith("/dev/"):
            device = argv[-1]
    status = data.get("smart_status")
    passed: bool | None = None
    if status is not None:
        if not isinstance(status, dict) or not isinstance(status.get("passed"), bool):
            raise ParseError(COMMAND, f"smart_status {status!r:.80} has no boolean 'passed'")
        passed = status["passed"]
    if exit_status & _DISK_FAILING:
        passed = False
    return SmartHealth(device=device, passed=passed, message="; ".join(words)[:500])
