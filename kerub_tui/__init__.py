"""kerub-tui: an agentless, SLA-driven controller for a fleet of KVM hosts."""

__version__ = "0.1.0"
