"""The worker: consume a processor's socket queues, run calls, record outcomes.

``runtime`` is the process (lifecycle, signals, heartbeat, the batch loop); ``batch`` one
consumer batch and its settlement; ``triage`` the pure decision of what happens to each
part; ``executor`` runs a call (in process or in a child running ``shim``); ``parts``
splits bundles; ``retry`` the backoff policy; ``loader`` imports a processor's module.

Nothing is imported here: :mod:`ectool.messages` uses ``shim``'s JSON helpers, and must
not pull the worker in with them.
"""
