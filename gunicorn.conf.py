"""gunicorn settings for flaskapp: `gunicorn -c gunicorn.conf.py wsgi:app`.

Command-line flags (`-b`, `-w`, `-k`, ...) and GUNICORN_CMD_ARGS override everything
here. The address is gunicorn's own default, 127.0.0.1:8000 (or 0.0.0.0:$PORT when
PORT is set); one worker per CPU core this process may run on, or WEB_CONCURRENCY.
"""
import os

wsgi_app = "wsgi:app"

# Workers: gevent, so one worker holds thousands of slow streams. The gevent worker
# patches the standard library before it loads the app, so never preload it in the master.
worker_class = "gevent"
# One gevent worker uses one core however many streams it holds: one per core uses them all.
workers = int(os.environ.get("WEB_CONCURRENCY") or len(os.sched_getaffinity(0)))
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "4000"))
preload_app = False

# Timeouts: answers take minutes; a stopping worker lets its streams finish first.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "120"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))

# gunicorn's control socket defaults to one path per user, which two servers on one
# machine would fight over: off unless a path is given.
control_socket_disable = "GUNICORN_CONTROL_SOCKET" not in os.environ
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "gunicorn.ctl")

# Logs: one JSON object a line on stderr, gunicorn's own lines and our request lines alike
# (flaskapp/ops/logformat.py); `--log-level` still sets the level.
accesslog = os.environ.get("GUNICORN_ACCESSLOG")  # our own JSON line per request is on stderr
from flaskapp.ops import logformat  # noqa: E402  (a module: `logconfig` is a gunicorn setting's name)

logconfig_dict = logformat.logconfig()
logger_class = logformat.GunicornLogger


def on_starting(server):
    """Give workers a metrics directory; with no upstream configured, start the built-in emulator."""
    from flaskapp.runtime import embedded

    _start_metrics(server)
    # Every worker's signature for requests the service sends itself on a caller's behalf (ops/limits.py).
    import secrets

    os.environ["_FLASKAPP_LOOPBACK_SECRET"] = secrets.token_hex(32)

    if embedded.wanted():
        server.emulator, base_url = embedded.start()
        server.log.warning("No OPENAI_API_KEY or OPENAI_BASE_URL set: answering from the built-in "
                           "emulator at %s (FLASKAPP_EMULATOR_* sets its timing)", base_url)


def on_exit(server):
    import shutil

    from flaskapp.runtime import embedded

    if getattr(server, "emulator", None) is not None:
        embedded.stop(server.emulator)
    if getattr(server, "metrics_dir_is_ours", False):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    from flaskapp.runtime import recycle

    recycle.remove_directory(server)


# Metrics: each worker writes its samples to files in PROMETHEUS_MULTIPROC_DIR and
# /metrics sums them (prometheus_client's multiprocess mode). The directory must start
# empty, or the last run's counts would be added in: a given one is emptied, and
# without one a temporary directory is made, and removed at exit.
def _start_metrics(server):
    import glob
    import tempfile

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    server.metrics_dir_is_ours = not directory
    if not directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="flaskapp-metrics-")
    else:
        os.makedirs(directory, exist_ok=True)
        for stale in glob.glob(os.path.join(directory, "*.db")):
            os.remove(stale)


def post_worker_init(worker):
    # Pay what a first request would pay before accepting any (the upstream client, its
    # TLS context, metric files, Flask's first dispatch): a first burst would all wait on
    # it (the openai client alone, 0.17 s on every first byte of a burst of 500 streams).
    from flaskapp.runtime.warm import warm

    taken = warm(worker.wsgi)
    if taken is not None:
        from flaskapp.ops import metrics

        metrics.worker_started(taken)  # opens this worker's metric files, too

    # Streams are many small writes: give gevent workers' connections a one-call write.
    from gunicorn.workers.ggevent import GeventWorker

    if isinstance(worker, GeventWorker):
        from flaskapp.runtime import clientsocket

        clientsocket.install(worker)

    # Last: from here this worker accepts, which a recycled worker waits for before it stops.
    from flaskapp.runtime import recycle

    recycle.worker_ready(worker)


def child_exit(server, worker):
    # A dead worker's counters still count; its live gauges (streams in flight) must not.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
    from flaskapp.runtime import recycle

    recycle.worker_exited(server, worker)


# max_requests recycling: a recycled worker asks for its replacement (SIGTTIN) and accepts
# until it is up, instead of leaving no worker accepting while it drains (runtime/recycle.py).
def nworkers_changed(server, new_value, old_value):
    from flaskapp.runtime import recycle

    recycle.nworkers_changed(server, new_value, old_value)


def on_reload(server):
    from flaskapp.runtime import recycle

    recycle.reloaded(server)
