"""Simulated hosts: the demo without any hosts, and 1,000 hosts on one machine for benchmarks and
fault tests. Nothing here touches a real machine; a simulated host says so in its document
(``Host.simulated``) and its address ends in ``.sim.invalid``, which never resolves."""

from .fleet import ADDRESS_DOMAIN, SimulatedFleet
from .machine import Machine, Timing
from .pool import HostPool
from .profiles import PROFILES, Profile, profile

__all__ = ["ADDRESS_DOMAIN", "HostPool", "Machine", "PROFILES", "Profile", "SimulatedFleet", "Timing", "profile"]
