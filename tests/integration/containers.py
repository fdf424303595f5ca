"""RabbitMQ brokers in containers, started with testcontainers, for tests of their own.

Every :class:`RabbitNode` is one broker in one container that a test may kill (SIGKILL), stop
(SIGTERM), restart, pause (SIGSTOP) or put under a resource alarm without touching anybody else's
broker, least of all the machine's shared RabbitMQ on port 5672.

Two modes, picked by the image:

- ``local/...`` images (built by ``.ci/containers.sh`` from Debian's package: no registry is
  reachable on the project's machines) run with **host networking**: each node gets its own AMQP
  and distribution ports and node name (``RABBITMQ_NODE_PORT``, ``RABBITMQ_DIST_PORT``,
  ``RABBITMQ_NODENAME=NAME@localhost``) and listens on 127.0.0.1 only. Nodes find each other through
  the host's epmd, so three of them can form a cluster (:func:`start_cluster`).
- any other image (the official ``rabbitmq:3.13`` where Docker Hub is reachable) runs with ordinary
  port mapping: the container's 5672 is bound to a free host port that stays the same across
  restarts. Clusters need host networking and are refused in this mode.

``PAOTA_TEST_RABBITMQ_IMAGE`` names the image; without it the local image is used when it exists,
else the official one. ``.ci/containers.sh env`` prints the rest of the environment
(``DOCKER_HOST``, and ``TESTCONTAINERS_RYUK_DISABLED=true``: Ryuk's image lives on Docker Hub).
Containers carry testcontainers' ``org.testcontainers`` label; ``.ci/containers.sh down`` removes
whatever a crashed run left behind.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

from tests.integration._skip import skip_or_fail

__all__ = [
    "DLX_CONFIRM_TIMEOUT_MS",
    "LOCAL_IMAGE",
    "OFFICIAL_IMAGE",
    "RabbitNode",
    "docker_reason",
    "free_port",
    "image_present",
    "rabbitmq_image",
    "start_cluster",
]

LOCAL_IMAGE = "local/rabbitmq:3.10"
OFFICIAL_IMAGE = "rabbitmq:3.13"
START_TIMEOUT_S = 90.0
#: RabbitMQ's ``dead_letter_worker_publisher_confirm_timeout`` (ms) on every test node, set when
#: the node boots (``-rabbit ...`` in ``RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS``, so the dead-letter
#: workers that start while a killed node recovers have it too). An at-least-once dead-letter
#: worker of the delay ladder sends a message it moved on again only after this long without its
#: confirm; with 3.10's default (180000) delayed tasks that were being moved when a broker was
#: SIGKILLed wait three minutes after it is back before they run (none is lost: seen in the
#: chaos test, 4 and 10 of 4,000 tasks ran 179 s after the recovery). The README advises
#: deployments to lower it the same way (``PAOTA_TEST_DLX_CONFIRM_TIMEOUT_MS=180000`` shows the
#: default).
DLX_CONFIRM_TIMEOUT_MS = int(
    os.environ.get(
        "PAOTA_TEST_DLX_CONFIRM_TIMEOUT_MS",
        os.environ.get("PAOTA_CLUSTER_DLX_CONFIRM_TIMEOUT_MS", "5000"),
    )
)
_AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


def _docker_host() -> str:
    host = os.environ.get("DOCKER_HOST")
    if host:
        return host
    local = "/var/lib/paota-docker/docker.sock"  # where .ci/containers.sh starts the engine
    if os.path.exists(local):
        os.environ["DOCKER_HOST"] = f"unix://{local}"
        return os.environ["DOCKER_HOST"]
    return "unix:///var/run/docker.sock"


def _testcontainers_env() -> None:
    _docker_host()
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    # The machines have /.dockerenv, so testcontainers thinks it runs inside a container and
    # would connect through a gateway address; the containers are on the host's loopback.
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
    os.environ.setdefault("TC_HOST", "127.0.0.1")


def docker_reason() -> str | None:
    """None when a Docker engine answers, else why not."""
    _testcontainers_env()
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError as exc:
        return f"the docker package is not installed ({exc})"
    try:
        client = docker.from_env(timeout=5)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return (
            f"no Docker engine at {_docker_host()} ({type(exc).__name__}: {exc}); "
            "start one with: bash .ci/containers.sh up"
        )
    return None


def image_present(name: str) -> bool:
    """Whether the engine has the image ``name`` (no pull)."""
    import docker

    client = docker.from_env(timeout=10)
    try:
        client.images.get(name)
    except Exception:
        return False
    finally:
        client.close()
    return True


def rabbitmq_image() -> str:
    """The RabbitMQ image the tests run (see the module docs)."""
    given = os.environ.get("PAOTA_TEST_RABBITMQ_IMAGE")
    if given:
        return given
    return LOCAL_IMAGE if image_present(LOCAL_IMAGE) else OFFICIAL_IMAGE


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _amqp_answers(port: int) -> bool:
    """Whether an AMQP server on ``port`` answers the protocol header with Connection.Start."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(_AMQP_HEADER)
            frame = sock.recv(7)
            return len(frame) == 7 and frame[0] == 1  # a method frame on channel 0
    except OSError:
        return False


class RabbitNode:
    """One RabbitMQ broker in a container of its own (see the module docs).

    ``cluster`` lists the node names of the cluster this node forms with its peers (classic
    peer discovery); ``cookie`` is their shared Erlang cookie.
    """

    def __init__(
        self,
        *,
        image: str | None = None,
        name: str | None = None,
        cluster: list[str] | None = None,
        cookie: str | None = None,
        port: int | None = None,
        dist_port: int | None = None,
        config: str = "",
    ) -> None:
        _testcontainers_env()
        self.image = image or rabbitmq_image()
        self.host_network = self.image.startswith("local/")
        short = name or f"paota{uuid.uuid4().hex[:8]}"
        self.node = f"{short}@localhost" if self.host_network else "rabbit@localhost"
        self.port = port or free_port()
        self.dist_port = dist_port or free_port()
        self._cluster = cluster or []
        self._cookie = cookie or uuid.uuid4().hex
        self._config = config
        self._container: Any = None

    @property
    def url(self) -> str:
        """``amqp://guest:guest@127.0.0.1:PORT/`` (guest may log in over loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def __repr__(self) -> str:
        return f"<RabbitNode {self.node} port={self.port}>"

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout_s: float = START_TIMEOUT_S) -> RabbitNode:
        """Create and start the container, and wait until the broker accepts AMQP connections."""
        from testcontainers.core.container import DockerContainer

        conf = [
            "loopback_users = none",
            # The test brokers run beside the shared one on a machine with a few GB free: keep
            # the default disk alarm out of the way unless a test sets one on purpose.
            "disk_free_limit.absolute = 50MB",
        ]
        if self._cluster:
            conf.append("cluster_formation.peer_discovery_backend = classic_config")
            conf += [
                f"cluster_formation.classic_config.nodes.{i} = {peer}"
                for i, peer in enumerate(self._cluster, 1)
            ]
        if self._config:
            conf.append(self._config)
        container = (
            DockerContainer(self.image)
            .with_env("PAOTA_ERLANG_COOKIE", self._cookie)
            .with_env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                f"-rabbit dead_letter_worker_publisher_confirm_timeout {DLX_CONFIRM_TIMEOUT_MS}",
            )
        )
        if self.host_network:
            container = (
                container.with_env("RABBITMQ_NODENAME", self.node)
                .with_env("RABBITMQ_NODE_PORT", str(self.port))
                .with_env("RABBITMQ_DIST_PORT", str(self.dist_port))
                .with_env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
                .with_env("RABBITMQ_CONF", "\n".join(conf))
                .with_kwargs(network_mode="host", labels={"paota.test": "true"})
            )
        else:
            container = container.with_bind_ports(5672, self.port).with_kwargs(
                hostname="localhost", labels={"paota.test": "true"}
            )
        self._container = container.start()
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the broker answers AMQP on its port (raises TimeoutError with its log)."""
        deadline = time.monotonic() + timeout_s
        while not _amqp_answers(self.port):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self} did not accept AMQP within {timeout_s:g} s; log:\n{self.logs()[-3000:]}"
                )
            time.sleep(0.2)

    @property
    def _wrapped(self) -> Any:
        if self._container is None:
            raise RuntimeError(f"{self} was not started")
        return self._container.get_wrapped_container()

    def kill(self) -> None:
        """SIGKILL the broker (the container stops; its data stays for :meth:`start_again`)."""
        self._wrapped.kill(signal="SIGKILL")
        self._wait_status({"exited", "dead"})

    def stop(self, timeout_s: int = 30) -> None:
        """Stop the broker gracefully (SIGTERM, then SIGKILL after ``timeout_s``)."""
        self._wrapped.stop(timeout=timeout_s)

    def start_again(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start the stopped or killed container again, on its data, and wait until it is up."""
        self._wrapped.start()
        self.wait_ready(timeout_s)

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """A graceful stop, then :meth:`start_again`."""
        self.stop()
        self.start_again(timeout_s)

    def pause(self) -> None:
        """SIGSTOP every process of the broker (it neither answers nor sends heartbeats).

        The cgroup freezer can give up on a loaded machine ("OCI runtime pause failed: unable
        to freeze"), leaving the container running: that is tried again, a few times."""
        for attempt in range(6):
            try:
                self._wrapped.pause()
                return
            except Exception as exc:
                if "unable to freeze" not in str(exc) or attempt == 5:
                    raise
                time.sleep(0.5)  # the freezer thawed the container; try again

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._wrapped.unpause()

    def remove(self) -> None:
        """Remove the container and its data. Idempotent."""
        if self._container is None:
            return
        with contextlib.suppress(Exception):
            self._wrapped.remove(force=True, v=True)
        self._container = None

    def _wait_status(self, statuses: set[str], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            wrapped = self._wrapped
            wrapped.reload()
            if wrapped.status in statuses:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self} is {wrapped.status}, not {sorted(statuses)}")
            time.sleep(0.1)

    # --- inspection ------------------------------------------------------------------------------

    def ctl(self, *args: str, timeout_s: float = 60.0, tool: str = "rabbitmqctl") -> str:
        """Run ``rabbitmqctl ARGS`` (or ``tool``) against this node inside its container, killed
        after ``timeout_s`` (exit code 124: CalledProcessError)."""
        command = ["timeout", "-k", "5", f"{timeout_s:g}", tool, "-n", self.node, *args]
        result = self._wrapped.exec_run(command, demux=False)
        output = result.output.decode("utf-8", "replace") if result.output else ""
        if result.exit_code != 0:
            raise subprocess.CalledProcessError(result.exit_code, command, output)
        return output

    def logs(self) -> str:
        """The container's output so far."""
        try:
            out = self._wrapped.logs()
        except Exception as exc:  # the container is gone
            return f"(no log: {exc})"
        return out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)

    def queue_depths(self) -> dict[str, int]:
        """``{queue: messages}`` for every queue of the default vhost."""
        out = self.ctl("list_queues", "--quiet", "--no-table-headers", "name", "messages")
        depths: dict[str, int] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                depths[parts[0]] = int(parts[1])
        return depths


def rabbit_node_or_skip(**kwargs: Any) -> RabbitNode:
    """A started :class:`RabbitNode`; skips (fails in CI) when no Docker engine answers."""
    reason = docker_reason()
    if reason is not None:
        skip_or_fail(f"a broker of the test's own needs a container: {reason}")
    return RabbitNode(**kwargs).start()


@contextlib.contextmanager
def start_cluster(size: int = 3) -> Iterator[list[RabbitNode]]:
    """``size`` RabbitMQ nodes in containers joined into one cluster; removed afterwards."""
    reason = docker_reason()
    if reason is not None:
        skip_or_fail(f"a RabbitMQ cluster needs containers: {reason}")
    image = rabbitmq_image()
    if not image.startswith("local/"):
        skip_or_fail(f"a cluster needs host networking (a local/ image), not {image}")
    tag = uuid.uuid4().hex[:6]
    names = [f"paota{tag}n{i}" for i in range(1, size + 1)]
    peers = [f"{n}@localhost" for n in names]
    cookie = uuid.uuid4().hex
    nodes = [RabbitNode(image=image, name=n, cluster=peers, cookie=cookie) for n in names]
    try:
        # Classic peer discovery: started together, the nodes form one cluster.
        with concurrent.futures.ThreadPoolExecutor(size) as starting:
            for started in [starting.submit(node.start) for node in nodes]:
                started.result()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            status = nodes[0].ctl("cluster_status", "--formatter", "json")
            running = json.loads(status[status.index("{") :]).get("running_nodes", [])
            if sorted(running) == sorted(peers):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster did not form: {status}")
            time.sleep(0.5)
        yield nodes
    finally:
        for node in nodes:
            node.remove()
