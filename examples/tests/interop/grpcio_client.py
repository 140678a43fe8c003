#!/usr/bin/env python3
"""A gRPC C-core client (grpcio) calling `mesh serve --tls-dir` over mTLS.

Used by examples/tests/interop.rs: tai's server must serve a client it did not
write. The message classes are built at run time from the FileDescriptorSet
tai-build wrote (no protoc, no generated Python), and the calls go through
grpcio's generic `channel.unary_unary(path, ...)`.

It proposes a policy, then lists the policies, then makes two calls the server
refuses (an empty proposal, a method it does not serve) to see the status each
ends with, then lists the policies again with a gzip-compressed request, and
prints one JSON line:
  {"ok": true, "receipt": {...}, "policies": [...],
   "refused": {"empty_proposal": {"code": ..., "details": ...}, ...},
   "gzip": {"code": "OK", "policies": 1}}                          exit 0
  {"ok": false, "code": "UNAVAILABLE", "details": "..."}           exit 1
"""

import argparse
import json
import sys

import grpc
from google.protobuf import json_format

from descriptors import message_classes

SERVICE = "tai.v1.mesh.Governor"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", required=True, help="host:port of mesh serve --tls-dir")
    parser.add_argument("--descriptor-set", required=True)
    parser.add_argument("--ca", required=True, help="the CA bundle (PEM) that signed the server")
    parser.add_argument("--cert", help="the client's certificate chain (PEM)")
    parser.add_argument("--key", help="the client's private key (PEM)")
    parser.add_argument("--server-name", default="localhost")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()

    cls = message_classes(args.descriptor_set)
    read = lambda path: open(path, "rb").read() if path else None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca),
        private_key=read(args.key),
        certificate_chain=read(args.cert),
    )
    options = [("grpc.ssl_target_name_override", args.server_name)]

    def unary(channel, method, request_type, response_type):
        return channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=cls(response_type).FromString,
        )

    with grpc.secure_channel(args.addr, credentials, options=options) as channel:
        propose = unary(channel, "ProposePolicy", "ProposePolicyRequest", "tai.v1.mesh.Receipt")
        get = unary(channel, "GetPolicies", "GetPoliciesRequest", "tai.v1.mesh.GetPoliciesResponse")
        request = cls("tai.v1.mesh.ProposePolicyRequest")()
        json_format.ParseDict(
            {"requestId": "grpcio-1", "policy": {"id": "from-grpcio", "policyType": "security"}},
            request,
        )
        try:
            receipt = propose(request, timeout=args.timeout)
            policies = get(cls("tai.v1.mesh.GetPoliciesRequest")(), timeout=args.timeout)
        except grpc.RpcError as e:
            print(json.dumps({"ok": False, "code": e.code().name, "details": e.details()}))
            return 1
        missing = unary(channel, "NoSuchMethod", "GetPoliciesRequest", "tai.v1.mesh.Receipt")
        refusals = {
            "empty_proposal": lambda: propose(
                cls("tai.v1.mesh.ProposePolicyRequest")(), timeout=args.timeout
            ),
            "unknown_method": lambda: missing(
                cls("tai.v1.mesh.GetPoliciesRequest")(), timeout=args.timeout
            ),
        }
        refused = {}
        for name, call in refusals.items():
            try:
                call()
                refused[name] = {"code": "OK", "details": ""}
            except grpc.RpcError as e:
                refused[name] = {"code": e.code().name, "details": e.details()}
        # The same read, its request compressed with gzip.
        try:
            listed = get(
                cls("tai.v1.mesh.GetPoliciesRequest")(),
                timeout=args.timeout,
                compression=grpc.Compression.Gzip,
            )
            gzip = {"code": "OK", "policies": len(listed.policies)}
        except grpc.RpcError as e:
            gzip = {"code": e.code().name, "details": e.details()}
    print(
        json.dumps(
            {
                "ok": True,
                "receipt": json_format.MessageToDict(receipt),
                "policies": json_format.MessageToDict(policies).get("policies", []),
                "refused": refused,
                "gzip": gzip,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
