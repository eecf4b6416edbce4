"""Operations, used by every layer: logs, metrics files, per-version statistics, input
monitoring, request bookkeeping, JSON, the error shape, a lock between processes, and
the Gunicorn worker with its error answers and gRPC handover.

May import: ``app.extensions`` and each other. Nothing else of the app.
"""
