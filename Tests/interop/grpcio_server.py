"""A grpcio OrderService for the reverse direction: our Swift client calls the reference server.

Usage: .venv/bin/python Tests/interop/grpcio_server.py   # prints "listening on PORT"; SIGTERM stops it

Behaviour (fixed, so the Swift test can assert on it):
  PlaceOrder      -> order_id "py_1", status "PLACED"; request metadata x-echo-* is echoed in the
                     initial and the trailing metadata.
  GetOrderStatus  -> order_id "sleep": sleeps 2 s first (deadlines, cancellation);
                     order_id "code:N": aborts with status N and message f"failure {N} ✓";
                     anything else: that id, status "PLACED", items ["a", "b"], total_price 1.5.
  CancelOrder, RecordRestaurantDecision -> UNIMPLEMENTED (grpcio's default).
The stubs are generated from Protos/ into a temp dir at start-up, as the pytest suite does.
"""
import pathlib
import signal
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from grpc_tools import protoc

PROTOS = pathlib.Path(__file__).resolve().parents[2] / "Protos"


def _load_stubs():
    out = tempfile.mkdtemp(prefix="grpcio-server-stubs-")
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    if protoc.main(["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}",
                    f"--grpc_python_out={out}", "order_service.proto"]) != 0:
        raise SystemExit("protoc failed on Protos/order_service.proto")
    sys.path.insert(0, out)
    import order_service_pb2
    import order_service_pb2_grpc
    return order_service_pb2, order_service_pb2_grpc


pb, pb_grpc = _load_stubs()


def _echoed(context):
    return tuple((m.key, m.value) for m in context.invocation_metadata() if m.key.startswith("x-echo-"))


class OrderService(pb_grpc.OrderServiceServicer):
    def PlaceOrder(self, request, context):
        echoed = _echoed(context)
        if echoed:
            context.send_initial_metadata(echoed)
            context.set_trailing_metadata(echoed)
        return pb.PlaceOrderResponse(order_id="py_1", status="PLACED")

    def GetOrderStatus(self, request, context):
        order_id = request.order_id
        if order_id == "sleep":
            time.sleep(2)
        elif order_id.startswith("code:"):
            code_number = int(order_id[len("code:"):])
            code = next((c for c in grpc.StatusCode if c.value[0] == code_number), grpc.StatusCode.UNKNOWN)
            context.abort(code, f"failure {code_number} ✓")
        return pb.GetOrderStatusResponse(order_id=order_id, status="PLACED", items=["a", "b"], total_price=1.5)


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    pb_grpc.add_OrderServiceServicer_to_server(OrderService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on {port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
