"""The trainer with DETR_TRAIN_BACKEND=kubeflow: each job a PyTorchJob, against a fake Kubernetes API
(tests/fakes/kube_api.py) reached by the real kubernetes client. Its pods run here as processes when a
test needs real training; otherwise the test plays the controller (conditions) and the pods (run files)."""

from __future__ import annotations

import json
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from cvat_plugin.trainer.launch import kubeflow
from cvat_plugin.trainer.launch.files import WORKER_MODULE, EventLog, RunFiles
from cvat_plugin.trainer.launch.kubeflow import PyTorchJobLauncher, job_name, kube_client
from cvat_plugin.trainer.launch.settings import KubeSettings
from detr import FitResult, TrainConfig, TrainEvent
from detr.config import TINY_MODEL
from detr.runs import RunSpec
from tests.fakes.kube_api import FakeKubeApi
from tests.test_trainer_function import TINY_OPTIONS, Trainer, make_dataset

pytestmark = pytest.mark.usefixtures("restore_logging")

NAMESPACE, IMAGE, PVC = "training", "registry.example.com/cvat.detr.trainer:test", "detr-home"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("DETR_HOME", str(home))
    monkeypatch.setenv("DETR_WEIGHTS", str(tmp_path / "no-weights"))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))  # for the pods' processes
    monkeypatch.setattr(kubeflow, "POLL_INTERVAL_S", 0.05)
    make_dataset(home)
    return home


@contextmanager
def cluster(tmp_path: Path, monkeypatch, *, nodes: int = 1, **fake_options) -> Iterator[FakeKubeApi]:
    """A fake cluster, and the trainer's environment for it."""
    with FakeKubeApi(logs_dir=tmp_path, **fake_options) as fake:
        monkeypatch.setenv("KUBECONFIG", str(fake.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        for name, value in {"DETR_TRAIN_BACKEND": "kubeflow", "DETR_KUBE_NAMESPACE": NAMESPACE,
                            "DETR_KUBE_IMAGE": IMAGE, "DETR_KUBE_PVC": PVC, "DETR_KUBE_NODES": str(nodes),
                            "DETR_KUBE_GPUS_PER_NODE": "1"}.items():
            monkeypatch.setenv(name, value)
        yield fake


@pytest.mark.slow
def test_a_job_trains_as_a_pytorchjob_of_two_nodes_on_the_shared_volume(tmp_path, home, monkeypatch):
    with cluster(tmp_path, monkeypatch, nodes=2, run_pods=True) as fake:
        trainer = Trainer(home)
        try:
            job = trainer.submit(options=TINY_OPTIONS)
            done = trainer.wait_final(job["id"])
        finally:
            trainer.runner.terminate(30)
        assert done["state"] == "succeeded", f"{done['error']}\n{fake.pod_logs(job_name(job['id']))}"
        assert done["model_id"] == "task-7-v1" and done["step"] == done["steps"] == 3 and done["progress"] == 1.0
        assert "AP" in done["metrics"]

        (manifest,) = fake.created
        name = job_name(job["id"])
        assert manifest["apiVersion"] == "kubeflow.org/v1" and manifest["kind"] == "PyTorchJob"
        assert manifest["metadata"]["name"] == name and manifest["metadata"]["namespace"] == NAMESPACE
        assert manifest["metadata"]["labels"]["cvat-detr/job"] == job["id"]
        replicas = manifest["spec"]["pytorchReplicaSpecs"]
        assert {kind: spec["replicas"] for kind, spec in replicas.items()} == {"Master": 1, "Worker": 1}
        pod = replicas["Worker"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["name"] == "pytorch" and container["image"] == IMAGE
        assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
        assert container["command"][-3:] == ["-m", WORKER_MODULE, str(home / "runs" / job["id"])]
        assert {"--nnodes=2", "--nproc-per-node=1", "--node-rank=$(RANK)"} <= set(container["command"])
        claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
        assert claim["persistentVolumeClaim"] == {"claimName": PVC}
        assert {"name": claim["name"], "mountPath": str(home)} in container["volumeMounts"]
        assert {"name": "DETR_HOME", "value": str(home)} in container["env"]
        # The finished job stays for its logs until the operator's TTL removes it.
        assert kubeflow._ended(fake.job(name))["type"] == "Succeeded"
        assert manifest["spec"]["runPolicy"]["ttlSecondsAfterFinished"] == kubeflow.KEEP_FINISHED_S


@pytest.mark.slow
def test_cancel_deletes_the_job_once_checkpointed_and_a_restart_resubmits_it(tmp_path, home, monkeypatch):
    with cluster(tmp_path, monkeypatch, run_pods=True) as fake:
        trainer = Trainer(home)
        try:
            job = trainer.submit(options={**TINY_OPTIONS, "epochs": 200})
            trainer.wait(job["id"], lambda j: j["state"] == "running" and j["step"] > 0)
            assert trainer.call("POST", f"/jobs/{job['id']}/cancel")[0] == 200
            done = trainer.wait_final(job["id"])
            assert done["state"] == "cancelled" and done["model_id"] is None, done["error"]
            assert fake.job(job_name(job["id"])) is None, "a cancelled job's PyTorchJob is deleted"
            files = RunFiles(home / "runs" / job["id"])
            assert files.read_result().status == "cancelled" and (files.run_dir / "checkpoint.pt").is_file()

            # The trainer stops (Nuclio's termination signal): the job is checkpointed and interrupted...
            second = trainer.submit(options={**TINY_OPTIONS, "epochs": 2})
            trainer.wait(second["id"], lambda j: j["state"] == "running" and j["step"] > 0)
        finally:
            trainer.stop()
        assert trainer.job(second["id"])["state"] == "interrupted"
        assert fake.job(job_name(second["id"])) is None

        # ...and the restarted trainer submits it again, on its checkpoint.
        restarted = Trainer(home)
        try:
            done = restarted.wait_final(second["id"])
        finally:
            restarted.runner.terminate(30)
        assert done["state"] == "succeeded" and done["model_id"] == "task-7-v1", done["error"]
        assert [m["metadata"]["name"] for m in fake.created] == [job_name(i) for i in (job["id"], second["id"],
                                                                                          second["id"])]
        request = json.loads((home / "runs" / second["id"] / "launch" / "request.json").read_text())
        assert request["resume"] is True
        records = (home / "runs" / second["id"] / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in records] == [1, 2]


@pytest.mark.parametrize("engine_error", [None, ValueError("annotations/train.json: box 3 has zero width")])
def test_a_failed_worker_fails_the_job_with_the_reason_from_the_conditions(tmp_path, home, monkeypatch,
                                                                            engine_error):
    with cluster(tmp_path, monkeypatch) as fake:
        trainer = Trainer(home)
        try:
            job = trainer.submit(options={**TINY_OPTIONS, "epochs": 5})
            name = job_name(job["id"])
            fake.wait_for(name, namespace=NAMESPACE)
            fake.set_condition(name, "Running", namespace=NAMESPACE)
            # The pods' processes: rank 0 reports a step; one fails.
            files = RunFiles(home / "runs" / job["id"])
            EventLog(files)(TrainEvent("step", 0, 5, 2, 3, 2, 15, losses={"loss": 3.5}))
            trainer.wait(job["id"], lambda j: j["step"] == 2 and j["loss"] == 3.5)
            if engine_error is not None:
                files.write_error(1, engine_error)
            message = f"PyTorchJob {name} is failed because 1 Worker replica(s) failed."
            fake.set_condition(name, "Failed", reason="PyTorchJobFailed", message=message, namespace=NAMESPACE)
            done = trainer.wait_final(job["id"])
        finally:
            trainer.runner.terminate(30)
        reason = f"PyTorchJob {name} failed: PyTorchJobFailed: {message}"
        assert done["state"] == "failed" and done["model_id"] is None
        assert done["error"] == (f"the {reason}" if engine_error is None else f"{engine_error} ({reason})")
        assert fake.job(name) is not None, "a failed job stays for its pods' logs"


def launcher(fake: FakeKubeApi, home: Path, nodes: int = 1) -> PyTorchJobLauncher:
    settings = KubeSettings(NAMESPACE, IMAGE, PVC, home, nodes=nodes, gpus_per_node=1)
    return PyTorchJobLauncher(settings, kube_client({"KUBECONFIG": str(fake.kubeconfig(home / "kubeconfig"))}))


def in_thread(function, *args, **kwargs) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        try:
            out["result"] = function(*args, **kwargs)
        except Exception as e:  # the test checks it
            out["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def finish(fake: FakeKubeApi, run: Path, name: str, status: str = "completed") -> None:
    """What the pods do at the end: rank 0 writes the result; the operator marks the job Succeeded."""
    RunFiles(run).write_result(FitResult(status, 1, {"AP": 0.5}, run / "model.pt", run / "checkpoint.pt", run))
    fake.set_condition(name, "Succeeded", namespace=NAMESPACE)


def test_a_trainer_restarted_while_its_job_runs_follows_that_job(tmp_path, home, monkeypatch):
    run = home / "runs" / "20250101-000000-aaaaaa"
    name = job_name(run.name)
    with FakeKubeApi() as fake:
        trainers_launcher = launcher(fake, home)
        # The job the trainer submitted before it was killed is still running.
        spec = RunSpec(home / "datasets" / "task-7", run, TINY_MODEL, TrainConfig(batch_size=2), resume=True)
        RunFiles(run).prepare(spec)
        fake.add(trainers_launcher.manifest(name, run, nodes=1, per_node=1))
        fake.set_condition(name, "Running", namespace=NAMESPACE)
        events: list[TrainEvent] = []
        thread, out = in_thread(trainers_launcher.fit, spec, callbacks=[events.append])
        EventLog(RunFiles(run))(TrainEvent("epoch_end", 0, 1, 3, 3, 3, 3, metrics={"AP": 0.5}))
        deadline = time.monotonic() + 30
        while not events:  # the launcher follows the job
            assert time.monotonic() < deadline and thread.is_alive(), out
            time.sleep(0.02)
        finish(fake, run, name)
        thread.join(30)
        assert out["result"].status == "completed" and out["result"].out_dir == run
        assert [e.kind for e in events] == ["epoch_end"]
        assert fake.created == [] and ("DELETE", f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs/{name}") \
            not in fake.requests


def test_a_finished_job_of_the_same_name_is_replaced(tmp_path, home, monkeypatch):
    run = home / "runs" / "20250101-000000-bbbbbb"
    name = job_name(run.name)
    with FakeKubeApi() as fake:
        trainers_launcher = launcher(fake, home, nodes=4)
        fake.add(trainers_launcher.manifest(name, run, nodes=1, per_node=1))
        fake.set_condition(name, "Succeeded", namespace=NAMESPACE)
        thread, out = in_thread(trainers_launcher.fit,
                                RunSpec(home / "datasets" / "task-7", run, TINY_MODEL, TrainConfig(batch_size=2)))
        deadline = time.monotonic() + 30
        while not fake.created:
            assert time.monotonic() < deadline, "no new job was submitted"
            time.sleep(0.02)
        assert kubeflow._ended(fake.job(name, NAMESPACE)) is None, "the new job, not the old one"
        # A batch of 2 splits among 2 of the 4 nodes: a Master and one Worker.
        assert fake.created[0]["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
        finish(fake, run, name)
        thread.join(30)
        assert out["result"].status == "completed", out


def test_a_cancel_before_any_pod_runs_deletes_the_job_at_once(tmp_path, home, monkeypatch):
    monkeypatch.setattr(kubeflow, "STOP_GRACE_S", 3600.0)  # not waited for: there is no checkpoint to write
    run = home / "runs" / "20250101-000000-cccccc"
    with FakeKubeApi() as fake:
        stop = threading.Event()
        thread, out = in_thread(launcher(fake, home).fit,
                                RunSpec(home / "datasets" / "task-7", run, TINY_MODEL, TrainConfig(batch_size=2)),
                                should_stop=stop.is_set)
        fake.wait_for(job_name(run.name), namespace=NAMESPACE)  # created, its pods pending
        stop.set()
        thread.join(30)
        assert out["result"].status == "cancelled" and out["result"].epochs_done == 0
        assert fake.job(job_name(run.name), NAMESPACE) is None
        assert RunFiles(run).stop_requested()


@pytest.mark.parametrize(("change", "message"), [
    ({"DETR_KUBE_IMAGE": ""}, "DETR_TRAIN_BACKEND=kubeflow needs DETR_KUBE_IMAGE"),
    ({"KUBECONFIG": "/nonexistent/kubeconfig"}, "no Kubernetes credentials"),
    ("not installed", "the Kubernetes API has no pytorchjobs.kubeflow.org/v1 in namespace training: install the "
     "Kubeflow training operator"),
    ("forbidden", "the trainer may not list pytorchjobs.kubeflow.org in namespace training (403 Forbidden): give "
     "its service account a Role with get, list, create and delete on them"),
    ("unreachable", "cannot reach the Kubernetes API at http://127.0.0.1:"),
])
def test_the_trainer_does_not_start_with_a_cluster_it_cannot_use(tmp_path, home, monkeypatch, change, message):
    options = {"installed": change != "not installed", "forbidden": (NAMESPACE,) if change == "forbidden" else ()}
    with cluster(tmp_path, monkeypatch, **options):
        for name, value in (change if isinstance(change, dict) else {}).items():
            monkeypatch.setenv(name, value)
        if change == "unreachable":  # a kubeconfig of a server that is gone
            with FakeKubeApi() as gone:
                monkeypatch.setenv("KUBECONFIG", str(gone.kubeconfig(tmp_path / "gone")))
        with pytest.raises(RuntimeError, match=re.escape(message)):
            Trainer(home).call("GET", "/health")
