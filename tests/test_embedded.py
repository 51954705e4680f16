"""The embedded default: no key, no base URL, and the same command still answers."""

from servers import request, start_gunicorn, stream


def test_without_upstream_settings_gunicorn_starts_the_emulator(tmp_path):
    server = start_gunicorn(tmp_path, {"FLASKAPP_EMULATOR_TTFT": "0.1", "FLASKAPP_EMULATOR_TOKENS": "20"})
    try:
        result = stream(f"{server.url}/stream?prompt=hello")
        assert result.status == 200 and result.complete and len(result.body.split()) >= 15
        status, _, body = request("GET", f"{server.url}/?prompt=hello")
        assert status == 200 and body == result.body
    finally:
        assert server.stop() == 0
    log = server.log()
    assert sum("answering from the built-in emulator at http://127.0.0.1:" in line for line in log.splitlines()) == 1
    assert "monkey-patching ssl" not in log.lower()
