"""Operations, used by every layer: logs, metrics files, input monitoring, request
bookkeeping, JSON, the error shape, and the Gunicorn worker with its error
answers and gRPC handover.

May import: ``app.extensions`` and each other. Nothing else of the app.
"""
