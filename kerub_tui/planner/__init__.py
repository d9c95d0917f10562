"""The planner: expectations and problems in, plans out (design §2).

Pure modules: ``state`` (the snapshot), ``checkers`` (expectations), ``problems`` (detectors),
``steps`` (actions with predictions), ``factories`` and ``search`` (planning), ``optimise``
(power saving, load balancing, KSM), ``explain``. Side effects live only in ``replanner`` (stores
proposals) and ``executor`` (runs approved plans through an injected host interface).
"""
