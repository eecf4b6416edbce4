"""tritonclient's and KServe's gRPC clients, each run in a process of its own.

Both libraries register the protocol's messages under the same names
(``inference.ModelInferRequest``, ...) in protobuf's process-wide registry,
which refuses the second: the test session imports KServe (its REST client),
so the gRPC clients run here. ``python -m tests.integration.grpc_clients NAME``
reads keyword arguments as JSON on stdin and writes the result as JSON.
``client()`` runs one from a test.
"""

import asyncio
import json
import subprocess
import sys
import threading

import numpy as np


def client(name: str, timeout: float = 60, **arguments):
    """Run ``name`` in a fresh interpreter and return what it answered."""
    answer = subprocess.run(
        [sys.executable, "-m", "tests.integration.grpc_clients", name],
        input=json.dumps(arguments),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if answer.returncode != 0:
        raise AssertionError(f"{name} failed:\n{answer.stderr}")
    return json.loads(answer.stdout)


class TritonStream:
    """``triton_stream`` in a process of its own, started on entering (once its clients
    call); ``stop()`` returns what it saw: ``{"versions": [...], "failures": [...]}``."""

    def __init__(self, target: str):
        self.target = target

    def __enter__(self):
        command = [sys.executable, "-m", "tests.integration.grpc_clients", "triton_stream"]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.process.stdin.write(json.dumps({"target": self.target}) + "\n")
        self.process.stdin.flush()
        assert json.loads(self.process.stdout.readline()) == {"started": True}
        return self

    def stop(self) -> dict:
        self.process.stdin.write("stop\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait(timeout=30)
        self.process.stdin.close()
        self.process.stdout.close()


def triton_input(module, name: str, values) -> object:
    array = np.array(values, np.float32)
    tensor = module.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    return tensor


def triton_linear(target: str, values: list, headers: dict | None = None) -> dict:
    """Health, metadata and one inference with tritonclient.grpc's defaults (raw tensors)."""
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(target)
    answer = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("linear") and client.is_model_ready("linear", "1"),
        "metadata": client.get_model_metadata("linear", as_json=True),
        "server": client.get_server_metadata(as_json=True),
    }
    tensor = triton_input(triton, "x", np.reshape(values, (-1, 1)))
    try:
        result = client.infer("linear", [tensor], request_id="grpc-1", headers=headers)
    except InferenceServerException as error:
        return {**answer, "error": str(error.status())}
    response = result.get_response(as_json=True)
    return {**answer, "y": result.as_numpy("y").tolist(), "response": response}


def triton_index(target: str, ready: bool = False) -> list:
    """The model repository's index as tritonclient.grpc's defaults ask for it."""
    import tritonclient.grpc as triton

    index = triton.InferenceServerClient(target).get_model_repository_index(as_json=True)
    return index.get("models", [])


def triton_control(target: str, model: str, values: list, channels: int = 8) -> dict:
    """tritonclient.grpc's load, then an inference of ``model`` on each of ``channels`` fresh
    channels, then its unload and the same again: what each channel was answered."""
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    def infer_everywhere() -> list:
        answers = []
        for _ in range(channels):
            client = triton.InferenceServerClient(target)
            try:
                result = client.infer(model, [triton_input(triton, "x", values)])
                answers.append(result.as_numpy("y").ravel().tolist())
            except InferenceServerException as error:
                answers.append(error.status())
            finally:
                client.close()
        return answers

    client = triton.InferenceServerClient(target)
    client.load_model(model)
    loaded = infer_everywhere()
    client.unload_model(model)
    return {"loaded": loaded, "unloaded": infer_everywhere()}


def triton_aio_multi(target: str, inputs: dict) -> dict:
    """Both outputs, then only ``total``, with tritonclient.grpc.aio."""
    import tritonclient.grpc.aio as triton_aio

    async def call():
        client = triton_aio.InferenceServerClient(target)
        try:
            tensors = [triton_input(triton_aio, name, values) for name, values in inputs.items()]
            only_total = [triton_aio.InferRequestedOutput("total")]
            everything = await client.infer("multi", tensors)
            total_only = await client.infer("multi", tensors, outputs=only_total)
        finally:
            await client.close()
        return {
            "scores": everything.as_numpy("scores").tolist(),
            "total": everything.as_numpy("total").tolist(),
            "only_total_has_scores": total_only.as_numpy("scores") is not None,
            "only_total": total_only.as_numpy("total").tolist(),
        }

    return asyncio.run(call())


def kserve_multi(target: str, raw: bool, inputs: dict) -> dict:
    """Liveness, readiness and one inference with KServe's InferenceGRPCClient."""
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async def call():
        client = InferenceGRPCClient(target)
        try:
            tensors = []
            for name, values in inputs.items():
                array = np.array(values, np.float32)
                tensor = InferInput(name, list(array.shape), "FP32")
                tensor.set_data_from_numpy(array, binary_data=raw)
                tensors.append(tensor)
            live = await client.is_server_live()
            ready = await client.is_model_ready("multi")
            result = await client.infer(InferRequest("multi", tensors, request_id="kserve-grpc"))
        finally:
            await client.close()
        outputs = {output.name: output.as_numpy().tolist() for output in result.outputs}
        return {"live": live, "ready": ready, "id": result.id, "outputs": outputs}

    return asyncio.run(call())


def typed_array(given: dict) -> np.ndarray:
    """``{"data": nested list, "dtype": numpy's name or "bytes"}`` as an array (strings as
    bytes objects, BYTES' numpy form)."""
    if given["dtype"] == "bytes":
        return np.vectorize(str.encode, otypes=[object])(np.array(given["data"], dtype=object))
    return np.array(given["data"], given["dtype"])


def as_json(array: np.ndarray):
    if array.dtype == object:
        return np.vectorize(bytes.decode, otypes=[object])(array).tolist()
    return array.tolist()


def triton_typed(target: str, model: str, inputs: dict) -> dict:
    """One inference with tritonclient.grpc's defaults (raw tensors), any datatypes:
    ``inputs`` maps names to ``typed_array``'s form."""
    import tritonclient.grpc as triton
    from tritonclient.utils import np_to_triton_dtype

    client = triton.InferenceServerClient(target)
    tensors = []
    for name, given in inputs.items():
        array = typed_array(given)
        tensor = triton.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer(model, tensors)
    outputs = result.get_response(as_json=True)["outputs"]
    return {
        output["name"]: {
            "datatype": output["datatype"],
            "data": as_json(result.as_numpy(output["name"])),
        }
        for output in outputs
    }


def kserve_typed(target: str, model: str, inputs: dict, raw: bool) -> dict:
    """The same with KServe's InferenceGRPCClient, raw or typed contents."""
    from kserve import InferenceGRPCClient, InferInput, InferRequest
    from tritonclient.utils import np_to_triton_dtype

    async def call():
        client = InferenceGRPCClient(target)
        try:
            tensors = []
            for name, given in inputs.items():
                array = typed_array(given)
                tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
                tensor.set_data_from_numpy(array, binary_data=raw)
                tensors.append(tensor)
            result = await client.infer(InferRequest(model, tensors))
        finally:
            await client.close()
        return {
            output.name: {"datatype": output.datatype, "data": as_json(output.as_numpy())}
            for output in result.outputs
        }

    return asyncio.run(call())


def triton_stream(target: str, threads: int = 4) -> dict:
    """Infer back to back from ``threads`` clients until stdin says "stop"; versions, failures."""
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    versions, failures, stop = [], [], threading.Event()

    def stream():
        client = triton.InferenceServerClient(target)
        tensor = triton_input(triton, "x", [[1.0], [2.0]])
        while not stop.is_set():
            try:
                versions.append(client.infer("linear", [tensor]).get_response().model_version)
            except InferenceServerException as error:
                failures.append(str(error))

    workers = [threading.Thread(target=stream) for _ in range(threads)]
    for worker in workers:
        worker.start()
    print(json.dumps({"started": True}), flush=True)
    sys.stdin.readline()
    stop.set()
    for worker in workers:
        worker.join(timeout=30)
    return {"versions": versions, "failures": failures}


def triton_versioned(target: str, model: str, version: str, x: float) -> list:
    """One inference naming ``version`` (a number or a label) with tritonclient.grpc: the
    version the answer names, and its output."""
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(target)
    result = client.infer(model, [triton_input(triton, "x", [[x]])], model_version=version)
    response = result.get_response(as_json=True)
    return [response["model_version"], result.as_numpy(response["outputs"][0]["name"]).tolist()]


def kserve_versioned(target: str, model: str, version: str, x: float) -> list:
    """The same with KServe's InferenceGRPCClient."""
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async def call():
        client = InferenceGRPCClient(target)
        try:
            tensor = InferInput("x", [1, 1], "FP32")
            tensor.set_data_from_numpy(np.array([[x]], np.float32))
            return await client.infer(InferRequest(model, [tensor], model_version=version))
        finally:
            await client.close()

    result = asyncio.run(call())
    return [result.model_version, result.outputs[0].as_numpy().tolist()]


def triton_statistics(target: str, model: str, version: str = "") -> dict:
    """tritonclient.grpc's get_inference_statistics, as JSON."""
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(target)
    return client.get_inference_statistics(model, version, as_json=True)


CLIENTS = {
    function.__name__: function
    for function in (
        triton_linear,
        triton_statistics,
        triton_versioned,
        kserve_versioned,
        triton_index,
        triton_control,
        triton_aio_multi,
        kserve_multi,
        triton_typed,
        kserve_typed,
        triton_stream,
    )
}

if __name__ == "__main__":
    arguments = json.loads(sys.stdin.readline())
    print(json.dumps(CLIENTS[sys.argv[1]](**arguments)))
