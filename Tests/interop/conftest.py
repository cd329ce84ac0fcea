"""Shared fixtures for the Python interoperability tests of our gRPC-over-HTTP/2 layer.

Why: our transport (Swift on libnghttp2) must interoperate with the reference implementation
(grpcio) and follow the "gRPC over HTTP/2" wire spec byte for byte. These fixtures

* generate the Python message/stub modules from Protos/ and Benchmarks/Protos/ with
  grpc_tools.protoc into a temp dir at session start (nothing generated is committed),
* start `Benchmarks/.build/debug/grpc-interop-server` (built by `swift build --package-path
  Benchmarks`; override with env GRPC_INTEROP_SERVER) on a free
  port, read `listening on PORT` from its first stdout line, and stop it afterwards: one shared
  server per session (`server`), plus a factory (`start_server`) for tests that need their own
  process with special flags (tiny message limit, idle timeout, SIGTERM, ...).
"""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTOS = ROOT / "Protos"
BENCH_PROTOS = ROOT / "Benchmarks" / "Protos"
DEFAULT_SERVER = ROOT / "Benchmarks" / ".build" / "debug" / "grpc-interop-server"
SERVICES_BIN = ROOT / ".build" / "debug"
START_TIMEOUT_S = 20.0


def _generate_stubs() -> pathlib.Path:
    """Compiles every proto of Protos/ and Benchmarks/Protos/ into a temp dir and puts it on sys.path.

    health.proto and reflection.proto (v1) are compiled from flat copies so their modules are
    `health_pb2` and `reflection_pb2` (a top-level `grpc/` folder would shadow grpcio's own `grpc`
    package); their proto packages stay grpc.health.v1 and grpc.reflection.v1, so the service
    paths on the wire are the standard ones.
    """
    from grpc_tools import protoc

    out = pathlib.Path(tempfile.mkdtemp(prefix="interop-stubs-"))
    flat = out / "_protos"
    flat.mkdir()
    shutil.copy(PROTOS / "grpc" / "health" / "v1" / "health.proto", flat / "health.proto")
    shutil.copy(PROTOS / "grpc" / "reflection" / "v1" / "reflection.proto", flat / "reflection.proto")
    jobs = [
        (PROTOS, [p.name for p in sorted(PROTOS.glob("*.proto"))]),
        (flat, ["health.proto", "reflection.proto"]),
        (BENCH_PROTOS, [p.name for p in sorted(BENCH_PROTOS.glob("*.proto"))]),
    ]
    for include, files in jobs:
        proto_include = pathlib.Path(protoc.__file__).parent / "_proto"
        args = ["protoc", f"-I{include}", f"-I{proto_include}", f"--python_out={out}",
                f"--grpc_python_out={out}", *files]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed for {files} (include {include})")
    sys.path.insert(0, str(out))
    return out


STUB_DIR = _generate_stubs()

import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402
import interop_streams_pb2  # noqa: E402
import interop_streams_pb2_grpc  # noqa: E402
import order_service_pb2  # noqa: E402
import order_service_pb2_grpc  # noqa: E402
import reflection_pb2  # noqa: E402
import reflection_pb2_grpc  # noqa: E402


def server_binary() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("GRPC_INTEROP_SERVER", DEFAULT_SERVER))
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"interop server binary not found at {path}: run `swift build --package-path Benchmarks` first "
                    "(or set GRPC_INTEROP_SERVER to its path)", pytrace=False)
    return path


class ServerProcess:
    """One running grpc-interop-server."""

    def __init__(self, *flags: str):
        self.flags = [str(f) for f in flags]
        self.log = tempfile.NamedTemporaryFile(prefix="interop-server-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([str(server_binary()), "--port", "0", *self.flags],
                                     stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        line = self._first_line()
        if not line.startswith("listening on "):
            self.kill()
            raise RuntimeError(f"server did not start (first line {line!r}); log:\n{self.read_log()}")
        self.port = int(line.split()[-1])
        self.address = f"127.0.0.1:{self.port}"

    def _first_line(self) -> str:
        result = {}

        def read():
            result["line"] = self.proc.stdout.readline().decode("utf-8", "replace").strip()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        if reader.is_alive():
            self.kill()
            raise RuntimeError(f"server printed nothing within {START_TIMEOUT_S}s; log:\n{self.read_log()}")
        return result["line"]

    def read_log(self) -> str:
        try:
            return pathlib.Path(self.log.name).read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the graceful shutdown hangs."""
        if self.alive():
            self.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()


@pytest.fixture(scope="session")
def server():
    """The shared server (default flags) for the whole session."""
    process = ServerProcess()
    yield process
    alive = process.alive()
    process.stop()
    assert alive, f"the shared server died during the session; log:\n{process.read_log()}"


@pytest.fixture
def start_server():
    """Factory for a private server with special flags; every one is stopped at test end."""
    started = []

    def start(*flags):
        process = ServerProcess(*flags)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(server.address) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture
def orders(channel):
    return order_service_pb2_grpc.OrderServiceStub(channel)


@pytest.fixture
def health(channel):
    return health_pb2_grpc.HealthStub(channel)


@pytest.fixture(scope="session")
def pb():
    """The generated modules, for tests that want them as a fixture."""
    class Modules:
        orders = order_service_pb2
        orders_grpc = order_service_pb2_grpc
        health = health_pb2
        health_grpc = health_pb2_grpc
    return Modules


# The platform's own services (test_tls, test_operations): built by `swift build`.

def binary(name: str, env: str) -> pathlib.Path:
    path = pathlib.Path(os.environ.get(env, SERVICES_BIN / name))
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"{name} not found at {path}: run `swift build` first (or set {env})", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, args, env=None, name="process"):
        self.log = tempfile.NamedTemporaryFile(prefix=f"tls-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([str(a) for a in args], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def read_log(self) -> str:
        return pathlib.Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def wait_for_port(port: int, process: Process) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"exited at start; log:\n{process.read_log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {START_TIMEOUT_S}s; log:\n{process.read_log()}")


@pytest.fixture(scope="module")
def redis():
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (scripts/install-deps)", pytrace=False)
    port = free_port()
    process = Process(["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                      name="redis")
    wait_for_port(port, process)
    yield port
    process.stop()
