#!/usr/bin/env python3
"""A gRPC C-core client (grpcio) that pings a server every second, idle.

Used by examples/tests/interop.rs against `mesh serve`: tai's keepalive police
must tell it GOAWAY ENHANCE_YOUR_CALM `too_many_pings` (gRFC A8) in frames C-core
reads. C-core logs that GOAWAY on stderr (an ERROR line naming
`too_many_pings`), which the test waits for. It connects, then stays idle for
`--seconds` and exits.
"""

import argparse
import sys
import time

import grpc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    options = [
        ("grpc.keepalive_time_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        # C-core's own client limit would stop the pings after two without data.
        ("grpc.http2.max_pings_without_data", 0),
    ]
    with grpc.insecure_channel(args.addr, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        print("connected", flush=True)
        time.sleep(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
