"""cvat_plugin.nuclio.client against the fake Nuclio dashboard: deploy, update, list, delete, invoke, errors."""

from __future__ import annotations

import socket

import pytest

from cvat_plugin.nuclio.client import (
    DashboardHTTPError,
    DashboardUnreachable,
    DeployError,
    FunctionNotFound,
    InvalidFunction,
    InvocationError,
    NuclioClient,
    check_function_name,
)
from tests.fakes.nuclio_dashboard import echo_config


def client_for(fake, **kwargs) -> NuclioClient:
    return NuclioClient(fake.url, poll_interval=0.0, backoff=0.0, **kwargs)


def test_deploy_creates_polls_until_ready_and_invocations_reach_the_named_function(fake_nuclio):
    nuclio = client_for(fake_nuclio)
    hello = nuclio.deploy(echo_config("hello", env=[{"name": "GREETING", "value": "hello"}]))
    bye = nuclio.deploy(echo_config("bye", env=[{"name": "GREETING", "value": "bye"}]))

    assert hello["status"]["state"] == bye["status"]["state"] == "ready"
    # one create each, then GETs through building -> waitingForResourceConfiguration -> ready
    assert fake_nuclio.count("POST", "/api/functions") == 2 and fake_nuclio.count("PUT", r"/api/functions/.*") == 0
    assert fake_nuclio.count("GET", "/api/functions/hello") >= 3
    assert hello["metadata"]["labels"]["nuclio.io/project-name"] == "cvat"
    assert hello["metadata"]["namespace"] == "nuclio"
    assert sorted(nuclio.list_functions()) == ["bye", "hello"]

    answer = nuclio.invoke("bye", {"x": 1}, path="/detect").json()
    assert answer == {"path": "/detect", "method": "POST", "body": {"x": 1}, "greeting": "bye"}
    assert nuclio.invoke("hello", {}).json()["greeting"] == "hello"
    assert [name for name, _, _ in fake_nuclio.invocations] == ["bye", "hello"]


def test_deploy_of_an_existing_function_updates_it(fake_nuclio):
    nuclio = client_for(fake_nuclio)
    nuclio.deploy(echo_config("greeter", env=[{"name": "GREETING", "value": "v1"}]))
    nuclio.deploy(echo_config("greeter", env=[{"name": "GREETING", "value": "v2"}]))

    assert fake_nuclio.count("POST", "/api/functions") == 1 and fake_nuclio.count("PUT", "/api/functions/greeter") == 1
    assert nuclio.invoke("greeter").json()["greeting"] == "v2"
    assert list(nuclio.list_functions()) == ["greeter"]


def test_functions_of_other_projects_and_namespaces_are_not_seen(fake_nuclio):
    client_for(fake_nuclio, project="other").deploy(echo_config("elsewhere"))
    client_for(fake_nuclio, namespace="team-b").deploy(echo_config("team-b-function"))
    nuclio = client_for(fake_nuclio)

    assert nuclio.list_functions() == {}
    assert nuclio.find_function("elsewhere") is None
    with pytest.raises(FunctionNotFound, match="'elsewhere'.*namespace 'nuclio'"):
        nuclio.get_function("elsewhere")


def test_delete_removes_a_function_and_a_missing_one_is_reported(fake_nuclio):
    nuclio = client_for(fake_nuclio)
    nuclio.deploy(echo_config("short-lived"))
    nuclio.delete_function("short-lived")
    assert nuclio.find_function("short-lived") is None
    with pytest.raises(FunctionNotFound, match="delete function 'short-lived'"):
        nuclio.delete_function("short-lived")


@pytest.mark.parametrize("name", ["Upper", "under_score", "-leading", "trailing-", "a" * 64, "", "dots.in.name"])
def test_invalid_names_are_refused_before_any_request(fake_nuclio, name):
    with pytest.raises(InvalidFunction, match="DNS-1123"):
        client_for(fake_nuclio).deploy(echo_config(name))
    assert fake_nuclio.log == []


def test_valid_name_at_the_length_limit():
    assert check_function_name("a" * 63) == "a" * 63


def test_a_deploy_that_fails_reports_nuclios_message(fake_nuclio):
    config = echo_config("broken")
    config["spec"]["handler"] = "tests.no_such_module:handler"
    with pytest.raises(DeployError, match="(?s)state error.*No module named 'tests.no_such_module'") as caught:
        client_for(fake_nuclio).deploy(config)
    assert caught.value.state == "error"


def test_a_deploy_that_never_gets_ready_times_out(fake_nuclio):
    fake_nuclio.polls_per_state = 10 ** 6
    with pytest.raises(DeployError, match="not ready within 0 s.*--deploy-timeout"):
        client_for(fake_nuclio, deploy_timeout=0.0).deploy(echo_config("slow"))


def test_server_errors_are_retried(fake_nuclio):
    fake_nuclio.fail("GET", "/api/functions", 503, times=2)
    assert client_for(fake_nuclio).list_functions() == {}
    assert fake_nuclio.count("GET", "/api/functions") == 3


def test_persistent_server_errors_end_in_a_clear_error(fake_nuclio):
    fake_nuclio.fail("GET", "/api/functions", 500, times=10)
    with pytest.raises(DashboardHTTPError, match="HTTP 500 after 3 attempts.*injected failure"):
        client_for(fake_nuclio, retries=2).list_functions()


def test_function_errors_are_raised_with_their_status_and_body(fake_nuclio):
    nuclio = client_for(fake_nuclio)
    config = echo_config("failing")
    config["spec"]["handler"] = "tests.test_nuclio_client:failing_handler"
    nuclio.deploy(config)
    with pytest.raises(InvocationError, match="'failing' answered HTTP 400.*bad frame") as caught:
        nuclio.invoke("failing", {"image": "?"})
    assert caught.value.status == 400


def failing_handler(context, event):
    return context.Response(body='{"error": "bad frame"}', headers={}, content_type="application/json",
                            status_code=400)


def test_unreachable_dashboard_is_reported_without_credentials():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    nuclio = NuclioClient(f"http://admin:s3cret@127.0.0.1:{port}", retries=0)
    with pytest.raises(DashboardUnreachable, match="NUCLIO_DASHBOARD_URL") as caught:
        nuclio.list_functions()
    assert "s3cret" not in str(caught.value) and "s3cret" not in repr(nuclio)
    assert "admin" not in str(caught.value)
