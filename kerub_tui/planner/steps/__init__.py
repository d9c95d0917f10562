"""Steps: one action each, a small frozen dataclass of plain parameters.

Every step offers
- ``take(state) -> state``: the pure prediction of its effect (the executor writes the same documents
  after the step succeeded, so prediction and record cannot drift apart);
- ``blocked(state) -> reason | None``: whether it can be taken in that state;
- ``reservations()``, ``cost(state)``, ``touched()`` (what to re-check after it);
- ``operations(state)``: what the executor runs, shell text from the hosts builders or a libvirt RPC,
  and ``commands(state)`` the same as the admin sees it;
- ``describe(state)``, ``effect(state)``, ``to_planned(state)`` and back with ``step_from_planned``.

Builders are imported inside ``operations`` so predictions never depend on them.

This package holds it by concern: ``base``, ``vm``, ``allocations``, ``lvm``, ``files``, ``zfs``, ``storage``,
``sharing``, ``host``. It re-exports every name: ``from kerub_tui.planner.steps import X`` keeps working.
"""

from __future__ import annotations

from typing import Any

from .allocations import (
    _add_allocation,
    _CreateAllocation,
    _drop_allocation,
    _find_allocation,
    _RemoveAllocation,
    allocation_name,
)
from .base import (
    _T,
    NFS_MOUNT_ROOT,
    PEER_KEY,
    PEER_KNOWN_HOSTS,
    STEP_TYPES,
    STOP_TIMEOUT_SECONDS,
    ControllerOp,
    DeferredShellOp,
    LibvirtOp,
    Operation,
    ShellOp,
    Step,
    Touched,
    UnknownStep,
    _config_list,
    _dealbreaker_dependencies_down,
    _disk_accessible,
    _disk_dyn,
    _host_config,
    _host_down,
    _host_dyn,
    _libvirt,
    _locked_disk,
    _locked_vm,
    _running_dependants,
    _taken,
    _vm_dyn,
    _vm_name,
    step_from_planned,
    step_type,
    vm_disks_missing,
)
from .files import (
    CreateFileImage,
    ExtendFileImage,
    RemoveFileImage,
)
from .host import (
    DEFERRED_BUILDERS,
    FenceHost,
    PowerDownHost,
    SetKsm,
    TrustHost,
    WakeHost,
    known_host_command,
    peer_key_command,
    trust_command_from_key,
)
from .lvm import (
    ConvertLvToMirror,
    CreateLv,
    CreateMirrorLv,
    CreateThinLv,
    CreateThinPool,
    ExtendLv,
    ExtendThinPool,
    MovePvExtents,
    RemoveLv,
    RemovePvFromVg,
)
from .sharing import (
    AllowIscsiInitiator,
    DisallowIscsiInitiator,
    ExportNfs,
    MountNfs,
    RekeyIscsi,
    RemoveIscsiSecret,
    ShareIscsi,
    UnexportNfs,
    UnmountNfs,
    UnshareIscsi,
    ganesha_export_id,
)
from .storage import (
    CopyAllocation,
    create_step,
    remove_step,
)
from .vm import (
    MigrateVm,
    PauseVm,
    ResumeVm,
    StartVm,
    StopVm,
)
from .zfs import (
    CreateGvinumVolume,
    CreateZfsVolume,
    RemoveGvinumVolume,
    RemoveZfsVolume,
)


def order_key(step: Step) -> tuple[Any, ...]:
    return step.sort_key()


from .. import image_steps as _image_steps  # noqa: E402, F401  (registers its step types)

__all__ = [
    '_add_allocation', '_config_list', '_CreateAllocation', '_dealbreaker_dependencies_down',
    '_disk_accessible', '_disk_dyn', '_drop_allocation', '_find_allocation', '_host_config', '_host_down',
    '_host_dyn', '_libvirt', '_locked_disk', '_locked_vm', '_RemoveAllocation', '_running_dependants', '_T',
    '_taken', '_vm_dyn', '_vm_name', 'allocation_name', 'CopyAllocation', 'create_step', 'CreateFileImage',
    'CreateGvinumVolume', 'CreateLv', 'CreateMirrorLv', 'CreateThinLv', 'CreateThinPool', 'CreateZfsVolume',
    'AllowIscsiInitiator', 'DisallowIscsiInitiator', 'ControllerOp', 'DEFERRED_BUILDERS', 'DeferredShellOp',
    'ExportNfs', 'ExtendFileImage', 'FenceHost',
    'ExtendLv',
    'ExtendThinPool',
    'ganesha_export_id', 'known_host_command', 'LibvirtOp', 'MigrateVm', 'MountNfs', 'NFS_MOUNT_ROOT',
    'Operation', 'PauseVm', 'PEER_KEY', 'peer_key_command', 'PEER_KNOWN_HOSTS', 'PowerDownHost', 'remove_step',
    'RemoveFileImage', 'RemoveGvinumVolume', 'RemoveLv', 'RemoveZfsVolume', 'ResumeVm', 'SetKsm', 'ShareIscsi',
    'ShellOp', 'StartVm', 'Step', 'step_from_planned', 'step_type', 'STEP_TYPES', 'STOP_TIMEOUT_SECONDS',
    'StopVm', 'Touched', 'trust_command_from_key', 'TrustHost', 'UnexportNfs', 'UnknownStep', 'UnmountNfs',
    'UnshareIscsi', 'vm_disks_missing', 'WakeHost', 'order_key', 'RekeyIscsi', 'RemoveIscsiSecret',
    'ConvertLvToMirror', 'MovePvExtents', 'RemovePvFromVg',
]
