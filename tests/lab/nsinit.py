"""Pid 1 of one lab host's pid namespace (started by `unshare --pid --fork --mount-proc`).

It runs the host's setup script (mounts, hostname, LVM, daemons) inside the fresh namespaces,
tells the lab on stdout whether that worked, then reaps every orphan of the namespace until it
is killed. Daemons re-parent to it; an init that does not reap leaves zombies, and libvirt takes
a zombie qemu for a live one. Standard library only: it runs under the system python with -I -S.
When this process dies the kernel kills everything else in the namespace, which is how the lab
takes a host down.
"""

import os
import subprocess
import sys
import time


def main() -> int:
    setup_script, log_path = sys.argv[1], sys.argv[2]
    with open(log_path, "ab", buffering=0) as log:
        rc = subprocess.call(
            ["/bin/sh", "-eu", setup_script],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    sys.stdout.write("ready\n" if rc == 0 else f"failed {rc}\n")
    sys.stdout.flush()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if rc != 0:
        return rc
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
