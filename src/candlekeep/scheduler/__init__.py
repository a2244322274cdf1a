"""The scheduler: cron triggers, the claim-based engine, the daemon process around it.

Modules, lower to upper: ``triggers`` (fire times, DST), ``spec`` and ``validate`` (jobs from
config), ``misfire`` (what due ticks become), ``store`` (claims, runs, leases in the state DB),
``runner`` (one tick's attempts), ``engine`` (the loop), ``daemon`` (PID file, signals, logs),
plus ``report``, ``describe``, ``install`` and ``manual`` for the CLI.
"""
