"""What flaskapp asks of gevent and gunicorn beyond their public APIs, gathered here.

Only the standard library is imported at this level: gunicorn's master imports
`runtime.embedded` before any worker exists.
"""
