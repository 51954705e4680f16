"""Load testing the blocking and streaming views: a concurrent HTTP driver, statistics, plots, the experiment.

Run `python -m flaskapp.loadtest --help`; the click commands in `cli` serve `flask loadtest` and `flask experiment`.
"""
