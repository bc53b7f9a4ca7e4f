"""A server on any loopback address answers its own advertised URL (and still refuses other Host names)."""

from __future__ import annotations

import http.client

import pytest

from bt_search.serve.app import build_app
from bt_search.serve.client import ServerClient, ServerUnusable
from bt_search.serve.runner import _url_host, allowed_hosts
from tests.support.serve import InProcessServer, build_index, service_for


@pytest.mark.parametrize("host", ["127.0.0.2", "127.1.2.3", "::1", "localhost"])
def test_allowed_hosts_hold_the_address_the_url_names(host):
    names = allowed_hosts(host, 8765)
    assert f"{_url_host(host)}:8765" in names and "evil.example:8765" not in names


def test_a_server_on_127_0_0_2_answers_its_own_url(engine, tmp_path):
    index = build_index(engine, tmp_path, "index", range(900, 903))
    service = service_for(index, engine)

    def make_app(port):
        return build_app(service, allowed_hosts=allowed_hosts("127.0.0.2", port), token=None, max_queue=4)

    with InProcessServer(make_app, host="127.0.0.2") as server:
        assert server.url == f"http://{_url_host('127.0.0.2')}:{server.port}"  # as serve_forever advertises it
        assert ServerClient(server.url).health()["images"] == 3  # http.client sends Host: 127.0.0.2:PORT
        connection = http.client.HTTPConnection("127.0.0.2", server.port, timeout=10)
        connection.request("GET", "/health", headers={"Host": f"evil.example:{server.port}"})
        assert connection.getresponse().status == 421
        connection.close()
    with pytest.raises(ServerUnusable):
        ServerClient(server.url).health()  # stopped
