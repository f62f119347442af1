"""`python -m lora_trainer ui` and its login: a non-loopback --host is refused without --auth /
--auth-file (or --insecure-no-auth), bad logins are refused, and a server started with --auth answers
gradio's config and API endpoints only after a login."""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from lora_trainer.cli import build_parser, main
from lora_trainer.host import subprocess_env
from lora_trainer.ui.cli import UIArgumentError, is_loopback, launch_auth


def ui_args(*argv: str):
    return build_parser().parse_args(["ui", *argv])


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "", "example.org", "::ffff:127.0.0.1"])
def test_a_network_host_without_auth_is_refused_before_anything_starts(host, tmp_path, capsys):
    workspace = tmp_path / "ws"
    assert main(["ui", "--host", host, "--dir", str(workspace)]) == 2
    message = capsys.readouterr().err
    assert "--auth USER:PASSWORD" in message and "--auth-file" in message and "--insecure-no-auth" in message
    assert "anyone" in message  # says why
    assert not workspace.exists()  # refused before the workspace is made or gradio started


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_a_loopback_host_needs_no_auth(host):
    assert is_loopback(host)
    assert launch_auth(ui_args("--host", host)) is None
    assert launch_auth(ui_args()) is None  # the default, 127.0.0.1


def test_insecure_no_auth_lets_a_network_host_go_without_a_login():
    assert launch_auth(ui_args("--host", "0.0.0.0", "--insecure-no-auth")) is None


def test_auth_values_repeated_or_comma_separated(tmp_path):
    args = ui_args("--host", "0.0.0.0", "--auth", "ann:pw1,bob:p:w:2", "--auth", " carl :x")
    assert launch_auth(args) == [("ann", "pw1"), ("bob", "p:w:2"), ("carl", "x")]
    assert launch_auth(ui_args("--auth", "ann:pw")) == [("ann", "pw")]  # a login on loopback too


def test_auth_file_one_login_a_line(tmp_path):
    logins = tmp_path / "logins"
    logins.write_text("# team\nann:pa,ss:word\n\n  bob:x  \n", encoding="utf-8")
    args = ui_args("--host", "0.0.0.0", "--auth-file", str(logins), "--auth", "carl:y")
    assert launch_auth(args) == [("carl", "y"), ("ann", "pa,ss:word"), ("bob", "x")]


@pytest.mark.parametrize(("value", "says"), [
    ("annpw", "no ':'"),
    (":pw", "user name"),
    ("  :pw", "user name"),
    ("ann:", "password"),
    ("ann:pw,", "no ':'"),  # an empty item of the list
    ("ann:pw,ann:other", "more than once"),
])
def test_bad_auth_values_are_refused(value, says, tmp_path, capsys):
    with pytest.raises(UIArgumentError, match=says):
        launch_auth(ui_args("--auth", value))
    workspace = tmp_path / "ws"
    assert main(["ui", "--auth", value, "--dir", str(workspace)]) == 2
    assert says in capsys.readouterr().err
    assert not workspace.exists()


def test_bad_auth_files_are_refused(tmp_path):
    with pytest.raises(UIArgumentError, match="cannot read"):
        launch_auth(ui_args("--auth-file", str(tmp_path / "missing")))
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n\n", encoding="utf-8")
    with pytest.raises(UIArgumentError, match="no USER:PASSWORD"):
        launch_auth(ui_args("--host", "0.0.0.0", "--auth-file", str(empty)))
    bad = tmp_path / "bad"
    bad.write_text("ann:pw\nbob\n", encoding="utf-8")
    with pytest.raises(UIArgumentError, match="line 2"):
        launch_auth(ui_args("--auth-file", str(bad)))


# --- a real server with --auth ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(opener, url: str, data: dict | bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET (or a POST of form fields / JSON bytes), errors included, no redirects
    followed for a 3xx answer's status to show."""
    body = headers = None
    if isinstance(data, dict):
        body, headers = urllib.parse.urlencode(data).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    elif data is not None:
        body, headers = data, {"Content-Type": "application/json"}
    try:
        with opener.open(urllib.request.Request(url, data=body, headers=headers or {}), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("auth_ui")
    logins = root / "logins"
    logins.write_text("bob:second:pw\n", encoding="utf-8")
    port = free_port()
    log = root / "ui.log"
    command = [sys.executable, "-m", "lora_trainer", "ui", "--dir", str(root / "workspace"), "--host", "127.0.0.1",
               "--port", str(port), "--auth", "ann:s3cret", "--auth-file", str(logins)]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=subprocess_env({"GRADIO_ANALYTICS_ENABLED": "False"}))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise AssertionError(f"the UI exited with {server.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"the UI did not answer at {url}:\n{log.read_text()}") from None
                time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow
def test_a_server_with_auth_answers_only_after_a_login(auth_server):
    anonymous = urllib.request.build_opener(NoRedirect())
    # the page is gradio's login form: it holds no part of the app
    status, page = request(anonymous, auth_server + "/")
    assert status == 200 and b'"auth_required":true' in page.replace(b" ", b"")
    assert b"lora_trainer" not in page
    # the app's config and its endpoints are refused without a login
    for path in ("/config", "/info"):
        assert request(anonymous, auth_server + path)[0] == 401, path
    join = json.dumps({"data": [], "fn_index": 0, "session_hash": "probe", "event_data": None}).encode()
    assert request(anonymous, auth_server + "/queue/join", join)[0] == 401
    assert request(anonymous, auth_server + "/run/predict", join)[0] == 401
    assert request(anonymous, auth_server + "/upload", b"{}")[0] == 401
    # a wrong password gets nothing
    assert request(anonymous, auth_server + "/login", {"username": "ann", "password": "wrong"})[0] == 400
    assert request(anonymous, auth_server + "/config")[0] == 401

    for user, password in (("ann", "s3cret"), ("bob", "second:pw")):  # --auth and --auth-file
        jar = http.cookiejar.CookieJar()
        browser = urllib.request.build_opener(NoRedirect(), urllib.request.HTTPCookieProcessor(jar))
        status, body = request(browser, auth_server + "/login", {"username": user, "password": password})
        assert status == 200 and json.loads(body) == {"success": True}, body
        status, body = request(browser, auth_server + "/config")
        assert status == 200, body
        config = json.loads(body)
        assert config["username"] == user
        assert "lora_trainer_start" in json.dumps(config)  # the Train tab itself
        status, page = request(browser, auth_server + "/")
        assert status == 200 and b"lora_trainer_start" in page


@pytest.mark.parametrize("host, confined", [("127.0.0.1", False), ("localhost", False), ("0.0.0.0", True),
                                            ("192.168.1.5", True)])
def test_typed_paths_are_confined_when_other_computers_reach_the_page(host, confined, tmp_path):
    from lora_trainer.cli import build_parser
    from lora_trainer.ui.cli import standalone_host

    args = build_parser().parse_args(["ui", "--dir", str(tmp_path / "ws"), "--host", host, "--insecure-no-auth"])
    made = standalone_host(args)
    assert made.confined is confined
    assert made.path_roots() == ([tmp_path / "ws", tmp_path / "ws" / "models"] if confined else None)
