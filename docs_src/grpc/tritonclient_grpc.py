import numpy as np
import tritonclient.grpc as grpcclient

client = grpcclient.InferenceServerClient("localhost:8081")
print(client.is_server_ready(), client.get_model_metadata("linear").platform)
x = grpcclient.InferInput("x", [2, 1], "FP32")
x.set_data_from_numpy(np.array([[0.5], [2.0]], np.float32))  # raw_input_contents
print(client.infer("linear", [x]).as_numpy("y"))
