"""Which TensorFlow ops a SavedModel may run when served: none that reach outside the process.

A SavedModel's graph is code from the file: TensorFlow runs every op its
functions hold, ``ReadFile`` and ``WriteFile`` among them, so a signature
that answers ``tf.io.read_file(path)`` would serve any file the server can
read. Before a graph is run (at compile, on the team's SavedModel; at load,
on the compiled runtime's) every op its served functions can reach is
checked against ``DENIED``, and the first one found refuses the version in
one line naming it.

A deny-list, not an allow-list: Keras graphs use hundreds of the ~1,500 ops
TensorFlow registers, and an allow-list of them would refuse ordinary models
at every TensorFlow upgrade. The ops that touch files, processes, Python,
the network or the logs are few and named by family, and a new one of those
families is refused by its pattern. ``ALLOWED_GRAPH_OPS`` lets named ops
through on purpose. The checkpoint ops that load a SavedModel's variables
(``RestoreV2``) are reached only from the saver's own functions, never from
a served function, so they are not refused.
"""

import re

# Exact names, by what they reach.
DENIED_NAMES = frozenset(
    {
        # Files.
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "ImmutableConst",
        "LoadAndRemapMatrix",
        "GenerateVocabRemapping",
        # Checkpoints (outside the loading of the version's own variables).
        "Save",
        "SaveV2",
        "SaveSlices",
        "Restore",
        "RestoreV2",
        "RestoreSlice",
        "MergeV2Checkpoints",
        "ShardedFilename",
        "ShardedFilespec",
        # Python.
        "PyFunc",
        "PyFuncStateless",
        "EagerPyFunc",
        # Output to the process' streams or files.
        "Print",
        "PrintV2",
        "ImportEvent",
        # Other processes and hosts.
        "Send",
        "Recv",
        "_Send",
        "_Recv",
        "_HostSend",
        "_HostRecv",
        "InfeedEnqueue",
        "OutfeedEnqueue",
    }
)
# Whole families: readers, datasets (files, SQL, LMDB, the data service), summaries,
# debugger taps, RPC and collectives (other hosts).
DENIED_PATTERN = re.compile(
    r".*Reader(V2)?|Reader.*|.*Dataset(V\d)?|.*Summary(V2)?|.*SummaryWriter|.*Summary.*Writer"
    r"|Debug.*|Rpc.*|TryRpc|Collective.*|.*TableFromTextFile(V2)?|Outfeed.*|Infeed.*"
)


def denied(op: str, allowed: frozenset[str] = frozenset()) -> bool:
    """Whether op type ``op`` reaches outside the process, unless ``allowed`` names it."""
    if op in allowed:
        return False
    return op in DENIED_NAMES or DENIED_PATTERN.fullmatch(op) is not None


def served_ops(saved_model_pb: bytes) -> dict[str, str]:
    """Every op type the served functions of a SavedModel can run, with a function that runs
    it: what its signatures compute, and every function its object graph exposes (a
    ``tf.function`` on a module, a Keras export's endpoints), through the calls they make."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString(saved_model_pb)
    ops: dict[str, str] = {}
    for meta_graph in saved.meta_graphs:
        library = {
            function.signature.name: function for function in meta_graph.graph_def.library.function
        }
        nodes = {node.name: node for node in meta_graph.graph_def.node}
        pending: list[str] = []
        # A signature's outputs name graph nodes; walk back along their inputs.
        seen_nodes, frontier = set(), []
        for signature in meta_graph.signature_def.values():
            frontier += [tensor.name.split(":")[0] for tensor in signature.outputs.values()]
        while frontier:
            name = frontier.pop().lstrip("^").split(":")[0]
            if name in seen_nodes or name not in nodes:
                continue
            seen_nodes.add(name)
            node = nodes[name]
            ops.setdefault(node.op, "a signature")
            pending += called(node, library)
            frontier += list(node.input)
        for item in meta_graph.object_graph_def.nodes:
            kind = item.WhichOneof("kind")
            if kind == "function":
                pending += list(item.function.concrete_functions)
            elif kind == "bare_concrete_function":
                pending.append(item.bare_concrete_function.concrete_function_name)
        seen_functions = set()
        while pending:
            name = pending.pop()
            if name in seen_functions or name not in library:
                continue
            seen_functions.add(name)
            for node in library[name].node_def:
                ops.setdefault(node.op, name)
                pending += called(node, library)
    return ops


def called(node, library: dict) -> list[str]:
    """The functions a node calls: its op itself, or a function-valued attribute
    (``PartitionedCall``'s ``f``, ``While``'s ``body``, ``If``'s branches)."""
    names = [node.op] if node.op in library else []
    for value in node.attr.values():
        if value.HasField("func"):
            names.append(value.func.name)
        names += [function.name for function in value.list.func]
    return names


def first_denied(saved_model_pb: bytes, allowed: frozenset[str] = frozenset()) -> str | None:
    """Why a SavedModel may not be served, naming its first denied op; None when it may."""
    for op, function in sorted(served_ops(saved_model_pb).items()):
        if denied(op, allowed):
            return (
                f"its graph runs the op {op} (in {function}), which reaches outside the "
                "server (files, processes, Python or the network): refused; ALLOWED_GRAPH_OPS "
                "lets named ops through"
            )
    return None
