"""The mesh's message classes, built at run time from the FileDescriptorSet
tai-build wrote: no protoc, no generated Python. Shared by the interop scripts.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def message_classes(descriptor_set_path):
    """The mesh's message classes, from the descriptor set's files."""
    files = descriptor_pb2.FileDescriptorSet()
    with open(descriptor_set_path, "rb") as f:
        files.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    pending = {f.name: f for f in files.file}
    added = set()

    def add(name):
        # Dependencies first: the pool refuses a file whose imports it lacks.
        if name in added:
            return
        for dep in pending[name].dependency:
            add(dep)
        pool.Add(pending[name])
        added.add(name)

    for name in pending:
        add(name)

    def cls(name):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))

    return cls
