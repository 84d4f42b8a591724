"""cvat_plugin.cvat.client against the fake CVAT server: auth, versions, export flows, errors, retries."""

from __future__ import annotations

import logging
import socket
import zipfile

import pytest

from cvat_plugin.cvat.auth import AccessToken, BrowserSession, LegacyToken, PasswordCredentials, credentials_from
from cvat_plugin.cvat.client import (
    AuthenticationError,
    CvatClient,
    CvatConnectionError,
    CvatError,
    ExportError,
    NotFoundError,
    PermissionDeniedError,
    ServerVersion,
)
from tests.fakes.cvat_server import FakeCvat
from tests.fakes.cvat_tasks import add_shapes_task


def make_client(fake: FakeCvat, credentials, **kwargs) -> CvatClient:
    return CvatClient(fake.url, credentials, poll_interval=0.001, backoff=0.001, **kwargs)


@pytest.fixture
def alice(fake_cvat):
    return fake_cvat.add_user("alice", "alice-password")


@pytest.fixture
def task(fake_cvat, alice):
    return add_shapes_task(fake_cvat, alice, num_frames=4)


def test_version_parsing_compares_with_tuples():
    assert ServerVersion.parse("2.42.0") >= (2, 16)
    assert ServerVersion.parse("v2.15.0-alpha") < (2, 16)
    assert str(ServerVersion.parse("2.9")) == "2.9.0"
    with pytest.raises(CvatError, match="cannot read the CVAT version"):
        ServerVersion.parse("nightly")


@pytest.mark.parametrize("make_credentials", [
    lambda user: LegacyToken(user.token),
    lambda user: PasswordCredentials(user.username, user.password),
])
def test_token_and_password_auth(fake_cvat, alice, task, make_credentials):
    with make_client(fake_cvat, make_credentials(alice)) as client:
        assert client.get_task(task.id)["name"] == "shapes"


def test_forwarded_browser_session_needs_csrf_on_unsafe_methods(fake_cvat, alice, task):
    import requests

    login = requests.post(f"{fake_cvat.url}/api/auth/login", json={"username": "alice", "password": "alice-password"})
    session = BrowserSession(login.cookies["sessionid"], login.cookies["csrftoken"])
    with make_client(fake_cvat, session) as client:
        assert client.get_labels(task.id)[0]["name"] == "car"
        client.replace_annotations(task.id, {"version": 0, "tags": [], "shapes": [], "tracks": []})
    assert task.shapes == []
    # The same cookies without the X-CSRFToken header are refused on PUT, as Django does.
    bare = requests.put(f"{fake_cvat.url}/api/tasks/{task.id}/annotations", json={"shapes": []},
                        cookies=login.cookies)
    assert bare.status_code == 403 and "CSRF" in bare.json()["detail"]


def test_access_token_on_2_42_is_ignored_and_the_error_says_why(fake_cvat, alice, task):
    with make_client(fake_cvat, AccessToken(alice.access_token)) as client:  # the version is not read yet
        with pytest.raises(AuthenticationError, match="is CVAT 2.42.0, which has no personal access tokens: use "
                                                      "--token"):
            client.get_task(task.id)


def test_access_token_on_a_newer_server(tmp_path):
    with FakeCvat(tmp_path, version="2.43.0") as fake:
        user = fake.add_user("bob", "pw")
        task = add_shapes_task(fake, user, num_frames=2)
        with make_client(fake, AccessToken(user.access_token)) as client:
            assert client.get_task(task.id)["id"] == task.id
        assert fake.log[-1] == ("GET", f"/api/tasks/{task.id}", 200)


def test_credentials_never_appear_in_reprs_errors_or_logs(fake_cvat, alice, task, caplog):
    secrets = [alice.token, "wrong-token-value", alice.password]
    caplog.set_level(logging.DEBUG)
    for credentials in (LegacyToken("wrong-token-value"), PasswordCredentials("alice", "wrong-token-value"),
                        BrowserSession("wrong-token-value", "wrong-token-value")):
        client = make_client(fake_cvat, credentials)
        text = repr(client) + repr(credentials)
        with pytest.raises(CvatError) as error:
            client.get_task(task.id)
        text += str(error.value) + repr(error.value) + caplog.text
        assert "***" in repr(credentials)
        assert not any(secret in text for secret in secrets)
    assert repr(LegacyToken(alice.token)) == "LegacyToken(token=***)"


def test_credentials_from_flags_then_environment():
    env = {"CVAT_ACCESS_TOKEN": "pat", "CVAT_USERNAME": "u", "CVAT_PASSWORD": "p"}
    assert credentials_from(token="key", env=env) == LegacyToken("key")
    assert credentials_from(env=env) == AccessToken("pat")
    assert credentials_from(env={"CVAT_USERNAME": "u", "CVAT_PASSWORD": "p"}) == PasswordCredentials("u", "p")
    assert credentials_from(env={}) is None
    with pytest.raises(ValueError, match="set CVAT_PASSWORD"):
        credentials_from(username="u", env={})


def test_url_with_credentials_is_refused():
    with pytest.raises(CvatError, match="do not put credentials in the CVAT URL"):
        CvatClient("https://alice:secret@cvat.example.com")
    with pytest.raises(CvatError, match="give it in full"):
        CvatClient("cvat.example.com")


def test_missing_credentials_give_401_with_advice(fake_cvat, task):
    with make_client(fake_cvat, None) as client:
        with pytest.raises(AuthenticationError, match="needs credentials .* CVAT_ACCESS_TOKEN") as error:
            client.get_task(task.id)
    assert error.value.status == 401 and "not provided" in error.value.detail


def test_wrong_password_says_which_credentials(fake_cvat, task):
    with make_client(fake_cvat, PasswordCredentials("alice", "nope")) as client:
        with pytest.raises(AuthenticationError, match="password of user 'alice'.*Invalid username/password"):
            client.get_task(task.id)


def test_user_without_access_gets_403(fake_cvat, task):
    mallory = fake_cvat.add_user("mallory", "pw")
    with make_client(fake_cvat, LegacyToken(mallory.token)) as client:
        with pytest.raises(PermissionDeniedError, match=f"no permission to read task {task.id}.*ask the task owner"):
            client.get_task(task.id)
        with pytest.raises(PermissionDeniedError):
            client.export_dataset(task.id, fake_cvat.workdir / "out.zip")


def test_unknown_task_gives_404_and_is_not_retried(fake_cvat, alice):
    with make_client(fake_cvat, LegacyToken(alice.token)) as client:
        with pytest.raises(NotFoundError, match="task 999 does not exist .* check the id"):
            client.get_task(999)
    assert fake_cvat.count("GET", "/api/tasks/999") == 1


def test_labels_follow_pagination_in_cvat_order(fake_cvat, alice):
    names = [f"label-{i:03d}" for i in range(130)]
    task = fake_cvat.add_task("many labels", owner=alice, labels=[{"name": n, "id": 5000 - 7 * i}
                                                                   for i, n in enumerate(names)], frames=[])
    with make_client(fake_cvat, LegacyToken(alice.token)) as client:
        labels = client.get_labels(task.id)
    assert [label["name"] for label in labels] == names
    assert labels[1]["id"] == 4993  # sparse CVAT ids kept
    assert fake_cvat.count("GET", "/api/labels") == 2


def test_data_meta_and_annotation_upload(fake_cvat, alice, task):
    with make_client(fake_cvat, LegacyToken(alice.token)) as client:
        meta = client.get_data_meta(task.id)
        assert [f["name"] for f in meta["frames"]] == [f.name for f in task.frames]
        label_id = client.get_labels(task.id)[1]["id"]
        shape = {"frame": 1, "label_id": label_id, "source": "auto", "attributes": [], "group": None,
                 "type": "rectangle", "occluded": False, "outside": False, "points": [1, 2, 30, 40],
                 "z_order": 0, "rotation": 0}
        replaced = client.replace_annotations(task.id, {"version": 0, "tags": [], "shapes": [shape], "tracks": []})
        assert [s["points"] for s in replaced["shapes"]] == [[1, 2, 30, 40]]
        client.update_annotations(task.id, {"version": 0, "tags": [], "shapes": [shape], "tracks": []},
                                  action="create")
        assert len(client.get_annotations(task.id)["shapes"]) == 2
        with pytest.raises(CvatError, match="is not from the task"):
            client.update_annotations(task.id, {"shapes": [{**shape, "label_id": -5}]}, action="create")
        with pytest.raises(ValueError, match="choose one of create, update, delete"):
            client.update_annotations(task.id, {}, action="replace")


def test_current_export_flow_polls_through_states(fake_cvat, alice, task, tmp_path):
    fake_cvat.polls_per_state = 2
    with make_client(fake_cvat, LegacyToken(alice.token)) as client:
        path = client.export_dataset(task.id, tmp_path / "out" / "export.zip")
    assert zipfile.ZipFile(path).namelist()[-1] == "annotations/instances_default.json"
    assert fake_cvat.count("POST", f"/api/tasks/{task.id}/dataset/export") == 1
    assert fake_cvat.count("GET", "/api/requests/.*") == 6  # queued x3, started x2, then finished
    assert fake_cvat.count("GET", f"/api/tasks/{task.id}/dataset") == 0
    assert list(path.parent.iterdir()) == [path]


def test_running_export_is_followed_not_restarted(fake_cvat, alice, task, tmp_path):
    import requests

    headers = {"Authorization": f"Token {alice.token}"}
    first = requests.post(f"{fake_cvat.url}/api/tasks/{task.id}/dataset/export",
                          params={"format": "COCO 1.0", "save_images": "true"}, headers=headers)
    assert first.status_code == 202
    with make_client(fake_cvat, LegacyToken(alice.token)) as client:
        client.export_dataset(task.id, tmp_path / "export.zip")
    assert [s for m, p, s in fake_cvat.log if p.endswith("/dataset/export")] == [202, 409]
    assert len(fake_cvat.requests) == 1


def test_legacy_flow_on_old_servers(tmp_path):
    with FakeCvat(tmp_path / "fake", version="2.14.4") as fake:
        user = fake.add_user("old", "pw")
        task = add_shapes_task(fake, user, num_frames=3)
        with make_client(fake, LegacyToken(user.token)) as client:
            path = client.export_dataset(task.id, tmp_path / "legacy.zip")
        assert "annotations/instances_default.json" in zipfile.ZipFile(path).namelist()
        statuses = [s for m, p, s in fake.log if p == f"/api/tasks/{task.id}/dataset"]
        assert statuses[0] == 202 and statuses[-2:] == [201, 200]
        assert fake.count("POST", ".*/dataset/export") == 0


def test_new_servers_answer_410_on_the_legacy_endpoint(fake_cvat, alice, task):
    import requests

    response = requests.get(f"{fake_cvat.url}/api/tasks/{task.id}/dataset", params={"format": "COCO 1.0"},
                            headers={"Authorization": f"Token {alice.token}"})
    assert response.status_code == 410 and "/dataset/export" in response.text


def test_failed_export_says_why(fake_cvat, alice, task, tmp_path):
    task.export_error = "Could not read frame 3"
    with make_client(fake_cvat, LegacyToken(alice.token)) as client:
        with pytest.raises(ExportError, match="failed to export task .*Could not read frame 3"):
            client.export_dataset(task.id, tmp_path / "export.zip")
    assert not (tmp_path / "export.zip").exists()


def test_failed_legacy_export_says_why(tmp_path):
    with FakeCvat(tmp_path / "fake", version="2.14.4") as fake:
        user = fake.add_user("old", "pw")
        task = add_shapes_task(fake, user, num_frames=2)
        task.export_error = "disk full"
        with make_client(fake, LegacyToken(user.token), retries=0) as client:
            with pytest.raises(ExportError, match="disk full"):
                client.export_dataset(task.id, tmp_path / "export.zip")


def test_export_that_never_finishes_times_out(fake_cvat, alice, task, tmp_path):
    fake_cvat.polls_per_state = 10**6
    with make_client(fake_cvat, LegacyToken(alice.token), export_timeout=0.05) as client:
        with pytest.raises(ExportError, match="did not finish within .*'queued'"):
            client.export_dataset(task.id, tmp_path / "export.zip")


def test_unknown_format_is_an_export_error(fake_cvat, alice, task, tmp_path):
    with make_client(fake_cvat, LegacyToken(alice.token)) as client:
        with pytest.raises(ExportError, match="as 'COCO 9.9'.*Unknown format specified"):
            client.export_dataset(task.id, tmp_path / "export.zip", format="COCO 9.9")


def test_5xx_and_429_are_retried_then_succeed(fake_cvat, alice, task):
    fake_cvat.fail("GET", f"/api/tasks/{task.id}", 503, times=2)
    fake_cvat.fail("GET", "/api/labels", 429, times=1, headers={"Retry-After": "0"})
    with make_client(fake_cvat, LegacyToken(alice.token)) as client:
        assert client.get_task(task.id)["id"] == task.id
        assert len(client.get_labels(task.id)) == 3
    assert [s for m, p, s in fake_cvat.log if p == f"/api/tasks/{task.id}"] == [503, 503, 200]
    assert [s for m, p, s in fake_cvat.log if p == "/api/labels"] == [429, 200]


def test_persistent_5xx_gives_up_with_a_clear_error(fake_cvat, alice, task):
    fake_cvat.fail("GET", f"/api/tasks/{task.id}", 502, times=100, body={"detail": "Bad gateway"})
    with make_client(fake_cvat, LegacyToken(alice.token), retries=2) as client:
        with pytest.raises(CvatError, match="HTTP 502 after 3 attempts.*Bad gateway.*retry later") as error:
            client.get_task(task.id)
    assert error.value.status == 502
    assert fake_cvat.count("GET", f"/api/tasks/{task.id}") == 3


def test_server_down_retries_then_says_so():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = CvatClient(f"http://127.0.0.1:{port}", None, retries=2, backoff=0.001)
    with pytest.raises(CvatConnectionError, match=r"cannot reach CVAT at http://127\.0\.0\.1:\d+ .* after 3 "
                                                  r"attempts.*check the URL \(--url / CVAT_URL\)"):
        client.about()


def test_truncated_download_is_retried(fake_cvat, alice, task, tmp_path):
    fake_cvat.truncate_downloads = 1
    with make_client(fake_cvat, LegacyToken(alice.token)) as client:
        path = client.export_dataset(task.id, tmp_path / "export.zip")
    assert zipfile.ZipFile(path).testzip() is None
    assert fake_cvat.count("GET", f"/api/tasks/{task.id}/dataset/download") == 2


def test_always_truncated_download_fails_and_leaves_nothing(fake_cvat, alice, task, tmp_path):
    fake_cvat.truncate_downloads = 100
    with make_client(fake_cvat, LegacyToken(alice.token), retries=1) as client:
        with pytest.raises(ExportError, match="arrived incomplete 2 times"):
            client.export_dataset(task.id, tmp_path / "out" / "export.zip")
    assert list((tmp_path / "out").iterdir()) == []


def test_download_reports_progress(fake_cvat, alice, task, tmp_path):
    from cvat_plugin.progress import ProgressReporter

    class Recorder(ProgressReporter):
        def __init__(self):
            self.events = []

        def start(self, total, *, desc, unit="it"):
            self.events.append(("start", total, unit))

        def advance(self, delta):
            self.events.append(("advance", delta))

        def finish(self):
            self.events.append(("finish",))

    recorder = Recorder()
    with make_client(fake_cvat, LegacyToken(alice.token)) as client:
        path = client.export_dataset(task.id, tmp_path / "export.zip", pbar=recorder)
    size = path.stat().st_size
    assert recorder.events[0] == ("start", size, "B") and recorder.events[-1] == ("finish",)
    assert sum(e[1] for e in recorder.events if e[0] == "advance") == size


def test_client_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, cvat_plugin.cvat.client, cvat_plugin.home.layout; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_links_to_other_hosts_are_refused(fake_cvat, alice):
    with make_client(fake_cvat, LegacyToken(alice.token)) as client:
        with pytest.raises(CvatError, match="refusing to send credentials there"):
            client.download("http://evil.example.com/file.zip", fake_cvat.workdir / "x.zip")
