"""`hvc bench`: the fleet-scale benchmark suite, each figure beside its peer where one exists.

Run ``hvc bench`` (or ``python -m console.bench``); ``--size smoke`` runs everything at a small
size in seconds (CI's smoke test), ``--json`` prints one document. Figures are printed, never
asserted: the targets are in ``TARGETS`` and the table says which ones held in this run.

Textual is imported only by the console probe, which runs in its own process (``probe.py``), so
its RSS and CPU are the console's own.
"""
