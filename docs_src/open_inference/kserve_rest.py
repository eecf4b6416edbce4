import asyncio

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main():
    client = InferenceRESTClient(RESTConfig(protocol="v2"))
    x = InferInput("x", [2, 1], "FP32")
    x.set_data_from_numpy(np.array([[0.5], [2.5]], np.float32))  # binary, by default
    response = await client.infer(
        "http://localhost:8000", InferRequest("linear", [x]), model_name="linear"
    )
    print(response.outputs[0].as_numpy())
    await client.close()


asyncio.run(main())
