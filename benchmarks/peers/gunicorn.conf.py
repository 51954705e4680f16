"""Stock gunicorn for the peer apps: none of flaskapp's hooks (its faster client writes)."""
worker_class = "gevent"
worker_connections = 4000
