"""Load testing the blocking and streaming views: an HTTP driver at a concurrency or a rate, token statistics,
the capacity search within an objective, plots, the experiment.

Run `python -m flaskapp.loadtest --help`; the click commands in `cli` serve `flask loadtest` and `flask experiment`.
"""
