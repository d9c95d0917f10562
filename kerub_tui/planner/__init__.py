"""The planner: expectations and problems in, plans out (ARCHITECTURE.md §2, §4).

Pure modules: ``state`` (the snapshot), ``checkers`` (expectations), ``problems`` (detectors),
``steps`` (actions with predictions), ``factories`` and ``search`` (planning), ``planning`` (plan
drafts, premises), ``optimise`` (power saving, load balancing, KSM), ``explain``, ``commitments``
(what approved plans will do). Side effects live only in ``replanner`` (stores proposals, approves)
and ``executor`` (runs approved plans through an injected ``HostOperations``).
"""
