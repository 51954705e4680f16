"""One route policy (ops/policy.py), read by auth, the rate limit and the request log.

Every route of the app must declare its policy on its view: a route without one fails
here (at run time it would get the guarded default), and the routes that must stay open
to machines and browsers without a key stay open.
"""
import pytest

from flaskapp import create_app
from flaskapp.ops.policy import GUARDED, PROBE, Policy, declared

# What each open or quiet route is, on purpose; every other route is GUARDED.
EXPECTED = {
    "health.healthz": PROBE,
    "health.health": PROBE,
    "health.readyz": PROBE,
    "static": PROBE,
    "metrics.metrics": Policy(key=True, limited=False, logged=False),
    "demo.demo": Policy(key=False),
}


@pytest.fixture(scope="module")
def app():
    return create_app({"TESTING": True, "API_KEYS": ("k" * 20,), "RATE_LIMIT": "1000/minute"})


def test_every_route_declares_its_policy(app):
    undeclared = sorted(rule.endpoint for rule in app.url_map.iter_rules()
                        if declared(app.view_functions[rule.endpoint]) is None)
    assert undeclared == [], "declare these routes' policy: @policy(...) on the view"
    table = app.extensions["policy"]
    guarded = {endpoint for endpoint, declared_policy in table.items() if declared_policy == GUARDED}
    assert guarded == {"prompt.blocking", "prompt.stream", "openai.chat_completions", "openai.models",
                       "openai.model", "openai.completions", "openai.embeddings", "openai.responses",
                       "demo.run"}


def test_the_open_and_quiet_routes_keep_their_policy(app):
    table = app.extensions["policy"]
    assert {endpoint: table[endpoint] for endpoint in EXPECTED} == EXPECTED
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert set(EXPECTED) <= endpoints


@pytest.mark.parametrize("path", ["/healthz", "/demo", "/static/demo.js"])
def test_probes_static_and_demo_answer_without_a_key(app, path):
    assert app.test_client().get(path).status_code == 200


@pytest.mark.parametrize("path", ["/", "/stream", "/v1/models", "/metrics", "/no-such-path"])
def test_everything_else_needs_a_key(app, path):
    assert app.test_client().get(path).status_code == 401


def test_the_steps_run_in_order_and_only_when_they_have_work():
    from flaskapp.ops import auth, metrics, requestlog

    app = create_app({"TESTING": True, "API_KEYS": ("k" * 20,), "RATE_LIMIT": "1000/minute"})
    before, after = app.extensions["request_steps"]
    assert [step.__name__ for step in before] == ["start_record", "require_key"]
    assert after == [auth.challenge, metrics.count_stream, requestlog.end]
    # Ours first, then Flask-Limiter's own check (per key: the key must be known).
    hooks = app.before_request_funcs[None]
    assert hooks[0].__name__ == "before_view" and len(hooks) == 2

    bare = create_app({"TESTING": True, "API_KEYS": (), "RATE_LIMIT": ""})
    before, after = bare.extensions["request_steps"]
    assert [step.__name__ for step in before] == ["start_record"]
    assert after == [metrics.count_stream, requestlog.end]
    assert [hook.__name__ for hook in bare.before_request_funcs[None]] == ["before_view"]
