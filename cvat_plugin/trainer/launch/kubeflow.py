"""Training as a Kubeflow PyTorchJob (``kubeflow.org/v1``): a Master pod and Workers, torchrun in each.

Each job of the trainer becomes a PyTorchJob named after it (``detr-<job id>``). Its pods run the
trainer's image with the shared volume's claim mounted at DETR_HOME's path, and torchrun starts one
process per GPU in each, on the same entry point as a local multi-process run
(``cvat_plugin.trainer.launch.worker``). The trainer follows the job's status conditions and, through
the run folder on the shared volume (``launch.files``), its events and result.

- cancel and the trainer stopping: the stop file asks the processes to stop after their current step
  with a checkpoint; once the job has ended (or STOP_GRACE_S later, or at once while no pod runs yet)
  the PyTorchJob is deleted; its pods then get SIGTERM, which the processes honour the same way;
- resume: a new PyTorchJob of the same name on the run's checkpoint (a finished one is replaced);
- a trainer restarted while its job ran on (killed, not stopped) follows that job again rather than
  submitting a second one;
- a failed pod fails the job (restart policy Never): the error is the engine's message when a process
  recorded one, with the reason from the job's Failed condition.
"""

from __future__ import annotations

import json
import logging
import re
import time
from hashlib import sha1
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from cvat_plugin.trainer.launch.files import WORKER_MODULE, LaunchError, RunFiles, follow
from cvat_plugin.trainer.launch.settings import KubeSettings, LaunchConfigError
from detr import FitResult, TrainEvent
from detr.distributed import processes_for_batch
from detr.runs import RunSpec

logger = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
#: The training operator finds the container and port of a replica by these names.
CONTAINER, PORT_NAME, PORT = "pytorch", "pytorchjob-port", 23456
#: Seconds between two looks at a job (each one a GET of the API server).
POLL_INTERVAL_S = 2.0
#: Finished jobs (and their pods' logs) are kept this long, then the operator deletes them.
KEEP_FINISHED_S = 24 * 3600
#: How long processes asked to stop may take to write their checkpoint before the job is deleted.
STOP_GRACE_S = 120.0
#: How long a deleted job may take to disappear before its name can be used again.
DELETE_TIMEOUT_S = 60.0
#: Names of pods and services get suffixes such as ``-worker-63``: job names are kept shorter.
MAX_NAME = 40


class PyTorchJobLauncher:
    def __init__(self, settings: KubeSettings, api_client: client.ApiClient):
        self.settings = settings
        self.api = client.CustomObjectsApi(api_client)

    @property
    def description(self) -> str:
        s = self.settings
        return f"Kubeflow PyTorchJobs in namespace {s.namespace}: up to {s.nodes} node(s) x {s.gpus_per_node} GPU(s)"

    def check(self) -> None:
        """At start-up: the PyTorchJob resource exists and the trainer may use it (a config error otherwise)."""
        namespace = self.settings.namespace
        try:
            self.api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, limit=1)
        except ApiException as e:
            if e.status == 404:
                raise LaunchConfigError(f"the Kubernetes API has no {PLURAL}.{GROUP}/{VERSION} in namespace "
                                        f"{namespace}: install the Kubeflow training operator, or set "
                                        "DETR_TRAIN_BACKEND=local") from None
            if e.status in (401, 403):
                raise LaunchConfigError(
                    f"the trainer may not list {PLURAL}.{GROUP} in namespace {namespace} ({e.status} {e.reason}): "
                    "give its service account a Role with get, list, create and delete on them") from None
            raise LaunchConfigError(f"the Kubernetes API answered {e.status} {e.reason} when listing {PLURAL} "
                                    f"in namespace {namespace}") from None
        except HTTPError as e:
            raise LaunchConfigError(f"cannot reach the Kubernetes API at {self.api.api_client.configuration.host}: "
                                    f"{e}") from None

    def fit(self, spec: RunSpec, *, callbacks: Sequence[Callable[[TrainEvent], None]] = (),
            should_stop: Callable[[], bool] | None = None) -> FitResult:
        """``detr.fit``'s contract, on the cluster."""
        files = RunFiles(spec.out_dir)
        name = job_name(files.run_dir.name)
        existing = self._get(name)
        if existing is not None and _ended(existing) is None and not files.stop_requested():
            logger.info("PyTorchJob %s is still running: following it", name)
        else:
            if existing is not None:
                self._remove(name, existing)
            nodes, per_node = processes_for_batch(spec.train_config.batch_size, self.settings.nodes,
                                                  self.settings.gpus_per_node)
            if nodes * per_node < self.settings.nodes * self.settings.gpus_per_node:
                logger.warning("PyTorchJob %s trains on %d node(s) x %d GPU(s): the batch splits into equal shares "
                               "among %d processes at most", name, nodes, per_node, nodes * per_node)
            files.prepare(spec)
            self._create(self.manifest(name, files.run_dir, nodes=nodes, per_node=per_node))
        return self._follow(name, files, callbacks, should_stop or (lambda: False))

    def manifest(self, name: str, run_dir: Path, *, nodes: int, per_node: int) -> dict[str, Any]:
        """The PyTorchJob of a run: ``nodes`` pods with ``per_node`` GPUs and as many processes each."""
        s = self.settings
        home = str(s.home)
        torchrun = ["python", "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc-per-node={per_node}",
                    # set by the operator in every pod (RANK is the pod's index, the Master's 0); the
                    # kubelet expands $(VAR) from the container's environment
                    "--node-rank=$(RANK)", "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)"]
        container = {
            "name": CONTAINER,
            "image": s.image,
            "command": [*torchrun, "-m", WORKER_MODULE, str(run_dir)],
            "env": [{"name": "DETR_HOME", "value": home}],
            "ports": [{"name": PORT_NAME, "containerPort": PORT}],
            "resources": {"limits": {"nvidia.com/gpu": str(per_node)}},
            "volumeMounts": [{"name": "detr-home", "mountPath": home},
                             {"name": "dshm", "mountPath": "/dev/shm"}],
        }
        template = {"spec": {"containers": [container], "volumes": [
            {"name": "detr-home", "persistentVolumeClaim": {"claimName": s.pvc}},
            # data-loader workers pass batches through shared memory; a container's default is 64 MB
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},
        ]}}
        replicas = {"Master": {"replicas": 1, "restartPolicy": "Never", "template": template}}
        if nodes > 1:
            replicas["Worker"] = {"replicas": nodes - 1, "restartPolicy": "Never", "template": template}
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {"name": name, "namespace": s.namespace, "labels": {
                "app.kubernetes.io/name": "cvat-detr", "app.kubernetes.io/component": "training",
                "cvat-detr/job": run_dir.name[:63]}},
            "spec": {
                "nprocPerNode": str(per_node),
                "runPolicy": {"cleanPodPolicy": "None", "ttlSecondsAfterFinished": KEEP_FINISHED_S,
                              "backoffLimit": 0},
                "pytorchReplicaSpecs": replicas,
            },
        }

    # --- following ----------------------------------------------------------------------------
    def _follow(self, name: str, files: RunFiles, callbacks: Sequence[Callable[[TrainEvent], None]],
                should_stop: Callable[[], bool]) -> FitResult:
        seen: set[str] = set()
        stop_asked_at: list[float] = []
        ending: list[dict | None] = []  # the condition the job ended with; None when it was deleted for a stop

        def ended() -> bool:
            job = self._get(name)
            if job is None:
                raise LaunchError(f"the PyTorchJob {name} was deleted in namespace {self.settings.namespace} "
                                  "while it trained; resume the job from its last checkpoint")
            for condition in _conditions(job):
                if condition["type"] not in seen:
                    seen.add(condition["type"])
                    logger.info("PyTorchJob %s: %s %s", name, condition["type"], _reason(condition))
            final = _ended(job)
            if final is not None:
                ending.append(final)
            elif stop_asked_at and ("Running" not in seen or time.monotonic() - stop_asked_at[0] > STOP_GRACE_S):
                ending.append(None)  # no pod to write a checkpoint yet, or they take too long
            return bool(ending)

        follow(files, callbacks, should_stop, ended=ended, on_stop=lambda: stop_asked_at.append(time.monotonic()),
               interval_s=POLL_INTERVAL_S)
        if stop_asked_at:
            self._delete(name)
        final = ending[-1]
        result = files.read_result()
        if final is None or final["type"] == "Succeeded":
            if result is not None:
                return result
            if final is None:
                return FitResult("cancelled", 0, {}, files.run_dir / "model.pt", files.run_dir / "checkpoint.pt",
                                 files.run_dir)
            raise LaunchError(f"the PyTorchJob {name} succeeded, but its result is not in {files.folder}: "
                              f"DETR_KUBE_PVC must be the volume mounted at DETR_HOME ({self.settings.home})")
        failure = files.failure()
        reason = f"PyTorchJob {name} failed: {_reason(final)}"
        if failure is None:
            raise LaunchError(f"the {reason}")
        raise LaunchError(f"{failure} ({reason})") from failure.__cause__

    # --- the API ------------------------------------------------------------------------------
    def _get(self, name: str) -> dict | None:
        try:
            return self.api.get_namespaced_custom_object(GROUP, VERSION, self.settings.namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise LaunchError(f"the Kubernetes API answered {e.status} {e.reason} for PyTorchJob {name}") from e

    def _create(self, manifest: dict) -> None:
        name = manifest["metadata"]["name"]
        deadline = time.monotonic() + DELETE_TIMEOUT_S
        while True:
            try:
                self.api.create_namespaced_custom_object(GROUP, VERSION, self.settings.namespace, PLURAL, manifest)
                logger.info("PyTorchJob %s submitted in namespace %s", name, self.settings.namespace)
                return
            except ApiException as e:
                # 409: the job this one replaces is still being deleted
                if e.status != 409 or time.monotonic() > deadline:
                    raise LaunchError(f"the Kubernetes API refused PyTorchJob {name}: {e.status} {e.reason} "
                                      f"{_status_message(e)}") from e
            time.sleep(POLL_INTERVAL_S)

    def _remove(self, name: str, job: dict) -> None:
        """Make way for a new job of this name: one still running was asked to stop; give it its grace."""
        deadline = time.monotonic() + STOP_GRACE_S
        while _ended(job) is None and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
            job = self._get(name)
            if job is None:
                return
        logger.info("Deleting the earlier PyTorchJob %s", name)
        self._delete(name)

    def _delete(self, name: str) -> None:
        try:
            self.api.delete_namespaced_custom_object(
                GROUP, VERSION, self.settings.namespace, PLURAL, name,
                body=client.V1DeleteOptions(propagation_policy="Background"))
            logger.info("PyTorchJob %s deleted", name)
        except ApiException as e:
            if e.status != 404:
                raise LaunchError(f"cannot delete PyTorchJob {name}: {e.status} {e.reason}") from e


def job_name(job_id: str) -> str:
    """A PyTorchJob's name for a job: ``detr-`` and the job id as a DNS-1123 label starting with a letter
    (ids too long or changed by the conversion end in a hash, so two jobs never share a name)."""
    name = "detr-" + re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")
    if name != f"detr-{job_id}" or len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 9].rstrip('-')}-{sha1(job_id.encode()).hexdigest()[:8]}"
    return name


def kube_client(env: Mapping[str, str]) -> client.ApiClient:
    """The API client of the trainer's service account in a cluster, else of its kubeconfig (KUBECONFIG)."""
    configuration = client.Configuration()
    try:
        if env.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=env.get("KUBECONFIG") or None, client_configuration=configuration)
    except (ConfigException, OSError) as e:
        raise LaunchConfigError(f"DETR_TRAIN_BACKEND=kubeflow: no Kubernetes credentials ({e}); run the trainer in "
                                "the cluster with a service account, or point KUBECONFIG at a kubeconfig") from None
    return client.ApiClient(configuration)


def _conditions(job: dict) -> list[dict]:
    return [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]


def _ended(job: dict) -> dict | None:
    """The job's Succeeded or Failed condition, or None while it runs."""
    return next((c for c in _conditions(job) if c["type"] in ("Succeeded", "Failed")), None)


def _reason(condition: dict) -> str:
    return ": ".join(part for part in (condition.get("reason"), condition.get("message")) if part)


def _status_message(error: ApiException) -> str:
    """The message of the Status object the API answers with."""
    try:
        return json.loads(error.body).get("message", "")
    except (TypeError, ValueError, AttributeError):
        return ""
