"""The SSH transport: per-host connection supervisor, trust, commands, streams, the libvirt tunnel."""
