"""The WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app`."""
from flaskapp import create_app

app = create_app()
