#!/usr/bin/env python3
"""A gRPC C-core server (grpcio) of `tai.v1.mesh.Governor`, called by tai's client.

Used by examples/tests/interop.rs: tai's generated client must call a server it
did not write, with its policy (deadline, A6 retry, pushback) on the wire as
gRPC specifies it. The message classes are built at run time from the
FileDescriptorSet tai-build wrote, and the methods are served through grpcio's
generic handlers.

It prints `serving on 127.0.0.1:PORT`, then one JSON line per call it receives:
  {"method": ..., "request_id": ..., "previous_attempts": "1" | null,
   "timeout_ms": ... | null, "at_ms": <monotonic clock, milliseconds>}
What a call is answered with depends on the proposed policy's name:
  "unavailable-twice"  UNAVAILABLE (with grpc-retry-pushback-ms: 300) on the
                       first two attempts of a request_id, then a receipt
  "pushback-stop"      UNAVAILABLE with a negative pushback: do not retry
  "invalid"            INVALID_ARGUMENT, a message with non-ASCII text
  anything else        a receipt
StreamPolicies sends two policies, then ends with DATA_LOSS.
It serves until stdin closes. C-core's keepalive enforcement is at its defaults
(pings at most every 5 minutes, none while idle), but for the number of bad
pings it lets pass, `--max-ping-strikes` (C-core's default: 2).
"""

import argparse
import json
import sys
import threading
import time
from concurrent import futures

import grpc

from descriptors import message_classes

SERVICE = "tai.v1.mesh.Governor"
INVALID_MESSAGE = "policy \u00ab invalid \u00bb refus\u00e9e: 100% wrong"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--descriptor-set", required=True)
    parser.add_argument("--max-ping-strikes", type=int, default=2)
    args = parser.parse_args()
    cls = message_classes(args.descriptor_set)
    Receipt = cls("tai.v1.mesh.Receipt")
    Policy = cls("tai.v1.mesh.Policy")
    attempts = {}
    lock = threading.Lock()

    def log(method, request_id, context):
        metadata = dict(context.invocation_metadata())
        remaining = context.time_remaining()
        if remaining is not None and remaining > 10**6:
            remaining = None  # grpcio's "no deadline": a number of years
        line = {
            "method": method,
            "request_id": request_id,
            "previous_attempts": metadata.get("grpc-previous-rpc-attempts"),
            "timeout_ms": None if remaining is None else round(remaining * 1000),
            "at_ms": round(time.monotonic() * 1000),
        }
        with lock:
            print(json.dumps(line), flush=True)

    def propose(request, context):
        log("ProposePolicy", request.request_id, context)
        with lock:
            attempt = attempts.get(request.request_id, 0) + 1
            attempts[request.request_id] = attempt
        name = request.policy.name
        if name == "unavailable-twice" and attempt <= 2:
            # Far above the method's 50 ms initial backoff: a retry that came
            # sooner did not wait for the pushback.
            context.set_trailing_metadata([("grpc-retry-pushback-ms", "300")])
            context.abort(grpc.StatusCode.UNAVAILABLE, f"attempt {attempt}: not yet")
        if name == "pushback-stop":
            context.set_trailing_metadata([("grpc-retry-pushback-ms", "-1")])
            context.abort(grpc.StatusCode.UNAVAILABLE, "do not retry")
        if name == "invalid":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, INVALID_MESSAGE)
        return Receipt(id=request.request_id, accepted=True, message=f"attempt {attempt}")

    def stream(request, context):
        log("StreamPolicies", None, context)
        for i in (1, 2):
            yield Policy(id=f"p{i}", policy_type=request.policy_type, version=i)
        context.abort(grpc.StatusCode.DATA_LOSS, "the log ends here")

    def unary(handler, request_type):
        return grpc.unary_unary_rpc_method_handler(
            handler,
            request_deserializer=cls(request_type).FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )

    handlers = {
        "ProposePolicy": unary(propose, "tai.v1.mesh.ProposePolicyRequest"),
        "StreamPolicies": grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=cls("tai.v1.mesh.StreamPoliciesRequest").FromString,
            response_serializer=lambda m: m.SerializeToString(),
        ),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[("grpc.http2.max_ping_strikes", args.max_ping_strikes)],
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"serving on 127.0.0.1:{port}", flush=True)
    # Until the test drops its end of stdin (or dies).
    sys.stdin.read()
    server.stop(grace=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
