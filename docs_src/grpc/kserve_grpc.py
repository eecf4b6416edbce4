import asyncio

import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest


async def main():
    client = InferenceGRPCClient("localhost:8081")
    x = InferInput("x", [2, 1], "FP32")
    x.set_data_from_numpy(np.array([[0.5], [2.0]], np.float32))
    response = await client.infer(InferRequest("linear", [x]))
    print(response.outputs[0].as_numpy())
    await client.close()


asyncio.run(main())
