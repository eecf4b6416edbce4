import numpy as np
import tritonclient.http as triton

client = triton.InferenceServerClient(url="localhost:8000")
x = triton.InferInput("x", [2, 1], "FP32")
x.set_data_from_numpy(np.array([[0.5], [2.5]], np.float32))  # binary, by default
print(client.infer("linear", [x]).as_numpy("y"))
