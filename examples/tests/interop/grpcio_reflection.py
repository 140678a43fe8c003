#!/usr/bin/env python3
"""A gRPC C-core reflection client (grpcio-reflection) reading `mesh serve`.

Used by examples/tests/interop.rs: what grpcurl-like tools do with tai's
reflection. The client lists the services, builds a descriptor pool from what
the server sends (a file and the files it imports, fetched as the pool needs
them), builds a message class from it and encodes a message. Prints one JSON line:
  {"services": [...], "methods": [...], "file": ..., "dependencies": [...],
   "encoded": "<hex>"}
"""

import argparse
import json
import sys

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True)
    args = parser.parse_args()
    with grpc.insecure_channel(args.addr) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(database)
        governor = pool.FindServiceByName("tai.v1.mesh.Governor")
        policy = message_factory.GetMessageClass(pool.FindMessageTypeByName("tai.v1.mesh.Policy"))
        # A field of an imported file's type (google.protobuf.Timestamp).
        message = policy(id="p1", version=2)
        message.created_at.seconds = 1
        print(
            json.dumps(
                {
                    "services": sorted(database.get_services()),
                    "methods": [m.name for m in governor.methods],
                    "file": governor.file.name,
                    "dependencies": sorted(d.name for d in governor.file.dependencies),
                    "encoded": message.SerializeToString().hex(),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
