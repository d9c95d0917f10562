"""The lab: real test hosts on this machine (root needed), for integration tests and by hand.

    python -m tests.lab up --hosts 3 [--light] [--slot N] [--pv-size 1G]
    python -m tests.lab status [--json]
    python -m tests.lab down [--slot N | --all]

    from tests.lab import Lab
    lab = Lab.up(3)                      # or the pytest fixtures `lab` / `light_lab`
    h = lab.hosts[0]                     # .name .address .port .client_key .host_key_fingerprint
    h.run("lvs --reportformat json")     # inside the host's namespaces (its network too), not over ssh
    lab.down()

Each lab host is one set of namespaces: mount + UTS + pid (`unshare --mount --uts --pid
--fork --mount-proc`; tests/lab/nsinit.py is its pid 1 and reaps orphans). Inside it:
  - its hostname (lab1, lab2, ...; light hosts light1, ...), a private tmpfs on /run, private
    /root (with .ssh/authorized_keys holding the lab's client key), /tmp and /etc/hosts (the
    machine's plus every host of the lab);
  - sshd on its address, port 22, with its own ed25519 host key, root login by key only
    (MaxStartups/MaxSessions 200); a login lands in the host's namespaces;
  - full hosts only: a network namespace of its own (the unshare adds --net): a loopback and eth0,
    one end of a veth pair whose other end (klabSLOThI) is on the slot's bridge klabSLOT in the
    machine's namespace. The bridge has 198.18.SLOT.1/24 (so the test process reaches every host),
    host i has 198.18.SLOT.(i+1); no host has a route beyond the bridge (198.18.0.0/15 is RFC
    2544's benchmarking range, nothing of the lab leaves the machine). Light hosts keep the
    machine's network namespace and listen on 127.0.SLOT.(i+1);
  - full hosts only: a /var/lib/kerub-tui of its own (empty at first: no file storage until a
    test makes /var/lib/kerub-tui/images there);
  - full hosts only: the storage servers a host of the product runs, each the host's own and on
    its own ports: tgtd (iSCSI, all addresses of the host), rpcbind and nfs-ganesha (NFS v3/v4,
    /etc/ganesha private, the pid file /run/ganesha/ganesha.pid the product's builders SIGHUP),
    started when the machine has them (tools/packages-test.txt);
  - full hosts only: libvirtd + virtlogd with private /etc/libvirt (fresh configs: distinct
    host_uuid; qemu.conf runs qemu as root, no security driver, no cgroup controllers because all
    lab libvirtds share the machine's one cgroup tree; SPICE/VNC/migration on the host's
    address), /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt; `virsh` defaults to
    qemu:///system. Domains die with the host.
  - full hosts only: LVM on a sparse file (default 1 GiB) behind a loop device, VG
    `kerub_<host>` (slot 0) or `kerub<SLOT>_<host>`, a private /etc/lvm whose filter accepts only
    that loop device and which turns activation off (this kernel has no device-mapper). A
    lab-only wrapper bind-mounted over /usr/sbin/lvm runs the real lvm and then tests/lab/lvmap.py,
    which maps each linear LV to a loop device at its offset in the PV and links it at
    /dev/VG/LV (a per-host tmpfs on /dev/VG). The product runs plain `lvcreate`/`lvs`.

Files: everything lives under LAB_ROOT (/var/lib/kerub-lab, or $KERUB_LAB_ROOT), one directory
per slot (slotN/: state.json, client_key, known_hosts, hosts, bin/, one directory per host).
The root filesystem is used rather than /run or /tmp because each host gets private ones.
The lab mounts nothing in the machine's own mount namespace; outside LAB_ROOT it only creates
loop devices over its own files, empty /dev/<VG> mount points, its bridge and veths, and the empty
mount point /var/lib/kerub-tui (kept: each full host has its own directory there, and removing the
mount point would detach the mounts on it in every other namespace).

Slots: slot N uses the addresses 198.18.N.2 ... (full hosts) or 127.0.N.2 ... (light hosts), and
the bridge klabN. The command line uses slot 0 (198.18.0.2, ...) unless told otherwise; Lab.up() without a slot (the pytest fixtures) takes a free slot in
100-199 and holds its lock file until down(), so concurrent test sessions never collide.

Cleaning: `down` kills the hosts' init processes (the kernel then kills everything in their
pid namespaces, qemu included), anything else whose pid namespace or command line belongs to
the slot, deletes the slot's bridge and veths (klabN, klabNh*: by name, as a crash leaves them),
detaches every loop device whose backing file is in the slot's directory, removes the /dev/<VG>
mount points and the directory. It needs no live state, so it works after a
crash and twice in a row; `up` runs it first. A slot held by a live test session is skipped.
"""

from .lab import (
    AUTO_SLOTS,
    DEFAULT_PV_SIZE,
    DEFAULT_SLOT,
    LAB_ROOT,
    NET_PREFIX,
    Lab,
    LabError,
    LabHost,
    bridge_name,
    down,
    down_all,
    fingerprint,
    lab_links,
    loop_devices,
    missing_prerequisites,
    pids_in_pidns,
    process_start,
    slot_dir,
    status,
    vg_name,
)

__all__ = [
    "AUTO_SLOTS",
    "DEFAULT_PV_SIZE",
    "NET_PREFIX",
    "DEFAULT_SLOT",
    "LAB_ROOT",
    "Lab",
    "LabError",
    "LabHost",
    "bridge_name",
    "down",
    "down_all",
    "fingerprint",
    "lab_links",
    "loop_devices",
    "missing_prerequisites",
    "pids_in_pidns",
    "process_start",
    "slot_dir",
    "status",
    "vg_name",
]
