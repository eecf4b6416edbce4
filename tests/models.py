"""The model zoo: the networks a data-science team trains after the notebook's line.

Each builder returns a seeded Keras model; ``ZOO`` names them for the
fixtures (tests/conftest.py), which save and compile each once per session.
``SAVED_MODELS`` write SavedModels instead, as ``model.export()`` and
``tf.saved_model.save`` do; ``ZOO_NAMES`` lists both.
``in_domain`` gives instances like the ones each model is used on.
"""

from pathlib import Path

import keras
import numpy as np


def mlp() -> keras.Model:
    """A regressor: 8 features, two hidden layers (relu, tanh), one number out."""
    keras.utils.set_random_seed(11)
    return keras.Sequential(
        [
            keras.Input((8,), name="features"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(1, name="value"),
        ]
    )


def classifier(seed: int = 12) -> keras.Model:
    """A softmax classifier over 4 features, normalised by an adapted preprocessing layer
    (another ``seed``: another set of weights, as a retrained version has)."""
    keras.utils.set_random_seed(seed)
    normalization = keras.layers.Normalization()
    normalization.adapt(np.random.default_rng(12).normal(5, 2, (200, 4)).astype(np.float32))
    return keras.Sequential(
        [
            keras.Input((4,), name="measurements"),
            normalization,
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3, activation="softmax", name="probabilities"),
        ]
    )


def cnn() -> keras.Model:
    """A small CNN on 28x28x1 images: rescaling, convolution, batch norm, pooling, dropout."""
    keras.utils.set_random_seed(13)
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="image"),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax", name="digits"),
        ]
    )


def mobilenet() -> keras.Model:
    """MobileNetV3Small on 224x224x3 images (random weights: no download), 10 classes."""
    keras.utils.set_random_seed(14)
    return keras.applications.MobileNetV3Small(input_shape=(224, 224, 3), weights=None, classes=10)


def dict_model() -> keras.Model:
    """A functional model with dict inputs and dict outputs: a score and class probabilities."""
    keras.utils.set_random_seed(15)
    age = keras.Input((1,), name="age")
    history = keras.Input((6, 2), name="history")
    hidden = keras.layers.Concatenate()([age, keras.layers.Flatten()(history)])
    hidden = keras.layers.Dense(12, activation="relu")(hidden)
    hidden = keras.layers.BatchNormalization()(hidden)
    score = keras.layers.Dense(1, name="score_layer")(hidden)
    probs = keras.layers.Dense(3, activation="softmax", name="probs_layer")(hidden)
    return keras.Model({"age": age, "history": history}, {"score": score, "probs": probs})


def wide_output() -> keras.Model:
    """4 numbers in, a 100x100 map out: 2,500 times more numbers out than in."""
    keras.utils.set_random_seed(16)
    return keras.Sequential(
        [
            keras.Input((4,), name="seed"),
            keras.layers.Dense(100 * 100),
            keras.layers.Reshape((100, 100), name="map"),
        ]
    )


def token_classifier() -> keras.Model:
    """A text classifier over 32 int32 token ids: embedding, pooling, softmax and its top class
    (an int32 output)."""
    keras.utils.set_random_seed(18)
    tokens = keras.Input((32,), dtype="int32", name="tokens")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(1000, 16)(tokens))
    probs = keras.layers.Dense(3, activation="softmax", name="probs_layer")(pooled)
    _, label = keras.ops.top_k(probs, k=1)
    return keras.Model(tokens, {"probs": probs, "label": label})


def uint8_image() -> keras.Model:
    """A CNN on uint8 32x32x3 pixels, rescaled inside the model, as image models are exported."""
    keras.utils.set_random_seed(19)
    return keras.Sequential(
        [
            keras.Input((32, 32, 3), dtype="uint8", name="pixels"),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5, activation="softmax", name="classes"),
        ]
    )


def tabular() -> keras.Model:
    """Tabular dict inputs: a float32 age and an int64 country code through an embedding."""
    keras.utils.set_random_seed(20)
    age = keras.Input((1,), name="age")
    country = keras.Input((1,), dtype="int64", name="country")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(20, 4)(country))
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([age, embedded]))
    return keras.Model({"age": age, "country": country}, keras.layers.Dense(1, name="risk")(hidden))


def sequence_model() -> keras.Model:
    """Sequences of any length of 4 features: a per-step output and a pooled one."""
    keras.utils.set_random_seed(21)
    steps = keras.Input((None, 4), name="steps")
    hidden = keras.layers.Dense(8, activation="tanh")(steps)
    per_step = keras.layers.Dense(2, name="per_step_layer")(hidden)
    pooled = keras.layers.Dense(1, name="pooled_layer")(
        keras.layers.GlobalAveragePooling1D()(hidden)
    )
    return keras.Model(steps, {"per_step": per_step, "pooled": pooled})


def text_classifier() -> keras.Model:
    """Raw text in, through TextVectorization inside the model: TensorFlow's runtime serves
    it, since LiteRT takes no strings."""
    keras.utils.set_random_seed(22)
    text = keras.Input((1,), dtype="string", name="text")
    vectorize = keras.layers.TextVectorization(max_tokens=40, output_sequence_length=6)
    vectorize.adapt(["the quick brown fox", "jumps over a lazy dog", "hello world data team"])
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(40, 8)(vectorize(text)))
    return keras.Model(text, keras.layers.Dense(2, activation="softmax", name="sentiment")(pooled))


def cumulative() -> keras.Model:
    """A cumulative product, an op LiteRT's builtins lack: TensorFlow's runtime serves it."""
    keras.utils.set_random_seed(23)
    values = keras.Input((6,), name="values")
    scaled = keras.layers.Dense(6, activation="sigmoid")(values)
    return keras.Model(
        values, keras.layers.Dense(2, name="totals")(keras.ops.cumprod(scaled, axis=-1))
    )


def lstm_fixed() -> keras.Model:
    """An LSTM over 20 steps of 4 features: LiteRT runs it unrolled."""
    keras.utils.set_random_seed(24)
    steps = keras.Input((20, 4), name="steps")
    return keras.Model(steps, keras.layers.Dense(1, name="forecast")(keras.layers.LSTM(8)(steps)))


def lstm_variable() -> keras.Model:
    """An LSTM over sequences of any length: a loop LiteRT cannot unroll, so TensorFlow's
    runtime serves it."""
    keras.utils.set_random_seed(25)
    steps = keras.Input((None, 4), name="steps")
    return keras.Model(steps, keras.layers.Dense(1, name="forecast")(keras.layers.LSTM(8)(steps)))


def mixed_precision() -> keras.Model:
    """A mixed_float16 MLP with a float32 head, as Keras' mixed precision guide builds it."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(26)
        features = keras.Input((8,), name="features")
        hidden = keras.layers.Dense(16, activation="relu")(features)
        head = keras.layers.Dense(1, dtype="float32", name="value")(hidden)
        return keras.Model(features, head)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def custom_layer() -> keras.Model:
    """A registered layer of the team's own module (tests/custom_layers.py) between two Dense."""
    from tests.custom_layers import ScaledSoftplus

    keras.utils.set_random_seed(27)
    features = keras.Input((6,), name="features")
    hidden = ScaledSoftplus()(keras.layers.Dense(8)(features))
    return keras.Model(features, keras.layers.Dense(3, name="scores")(hidden))


def exported(directory: Path) -> None:
    """``model.export()`` of a classifier on uint8 pixels: TensorFlow Serving's own format."""
    keras.utils.set_random_seed(28)
    pixels = keras.Input((8, 8, 1), dtype="uint8", name="pixels")
    scaled = keras.layers.Rescaling(1 / 255)(pixels)
    hidden = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(scaled))
    model = keras.Model(pixels, keras.layers.Dense(3, activation="softmax")(hidden))
    model.export(str(directory), verbose=False)


def tf_module(directory: Path) -> None:
    """``tf.saved_model.save`` of a plain ``tf.Module``: two typed inputs, two named outputs,
    and a cumulative sum over an open length (no Keras anywhere)."""
    import tensorflow as tf

    class Scorer(tf.Module):
        def __init__(self):
            super().__init__()
            self.weights = tf.Variable(np.linspace(-1, 1, 4, dtype=np.float32))

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 4], tf.float32, name="features"),
                tf.TensorSpec([None, None], tf.int32, name="counts"),
            ]
        )
        def serve(self, features, counts):
            score = tf.reduce_sum(features * self.weights, axis=1)
            return {"score": tf.tanh(score), "running": tf.cumsum(counts, axis=1) * 2}

    scorer = Scorer()
    tf.saved_model.save(scorer, str(directory), signatures={"serving_default": scorer.serve})


def scaled_linear(scale: float) -> keras.Model:
    """y = scale * x: each version answers differently, so an answer shows which one ran."""
    model = keras.Sequential([keras.Input(shape=(1,), name="x"), keras.layers.Dense(1)])
    model.set_weights([np.array([[scale]], np.float32), np.zeros(1, np.float32)])
    return model


def slow_convolutions(features: int = 8) -> keras.Model:
    """``features`` numbers in, 40x40 feature maps through five convolutions: ~6 ms an
    instance here, so that a full batch of 1,000 outlasts a scaled-down GUNICORN_TIMEOUT
    (and, with one number in, a shadow slower than the clients of y = k·x)."""
    keras.utils.set_random_seed(17)
    convolutions = [keras.layers.Conv2D(64, 3, padding="same", activation="relu") for _ in range(5)]
    return keras.Sequential(
        [
            keras.Input((features,), name="x"),
            keras.layers.Dense(40 * 40 * 16),
            keras.layers.Reshape((40, 40, 16)),
            *convolutions,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, name="y"),
        ]
    )


ZOO = {
    "mlp": mlp,
    "classifier": classifier,
    "cnn": cnn,
    "mobilenet": mobilenet,
    "dict_model": dict_model,
    "token_classifier": token_classifier,
    "uint8_image": uint8_image,
    "tabular": tabular,
    "sequence_model": sequence_model,
    "text_classifier": text_classifier,
    "cumulative": cumulative,
    "lstm_fixed": lstm_fixed,
    "lstm_variable": lstm_variable,
    "mixed_precision": mixed_precision,
    "custom_layer": custom_layer,
}
SAVED_MODELS = {"exported": exported, "tf_module": tf_module}
ZOO_NAMES = sorted([*ZOO, *SAVED_MODELS])


def in_domain(model: keras.Model, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Instances by input name, like the ones the model is used on, in each input's dtype:
    pixels 0..255, ids 0..19 (within every zoo vocabulary), else N(0, 3); a dimension the
    model leaves open has 7."""
    from app.runtime.compiler import tensor_specs

    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in tensor_specs(model)[0]:
        shape = (rows, *(7 if n == -1 else n for n in spec.feature_shape))
        image = len(spec.feature_shape) == 3
        if spec.dtype == "string":
            words = np.array("the quick brown fox jumps hello world team".split())
            phrases = [" ".join(rng.choice(words, 3)) for _ in range(int(np.prod(shape)))]
            inputs[spec.name] = np.array(phrases, dtype=object).reshape(shape)
            continue
        if spec.dtype.startswith(("int", "uint")):
            values = rng.integers(0, 256 if image else 20, shape)
        else:
            values = rng.uniform(0, 255, shape) if image else rng.normal(0, 3, shape)
        inputs[spec.name] = values.astype(spec.dtype)
    return inputs


def extreme(array: np.ndarray, value: float) -> np.ndarray:
    """``array`` full of ``value``, or, for an integer input, of its dtype's nearest extreme
    (strings stay as they are)."""
    if array.dtype == object:
        return array
    if array.dtype.kind in "iu":
        info = np.iinfo(array.dtype)
        return np.full_like(array, info.max if value > 0 else info.min)
    return np.full_like(array, value)


def keras_outputs(model: keras.Model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference: Keras' outputs by the name the server gives them."""
    from app.runtime.compiler import reference, tensor_specs

    input_specs, output_specs = tensor_specs(model)
    outputs = reference(model, [inputs[spec.name] for spec in input_specs])
    return {spec.name: output for spec, output in zip(output_specs, outputs, strict=True)}


# How each API carries the same instances, and where its answer holds each output.
APIS = ("predict", "v2", "v1")


def request_for(api: str, name: str, inputs: dict[str, np.ndarray]) -> tuple[str, dict]:
    """The path and JSON body asking ``api`` for predictions on ``inputs``."""
    if api == "v2":
        from app.runtime.datatypes import DATATYPES

        tensors = [
            {
                "name": key,
                "shape": list(array.shape),
                "datatype": "BYTES" if array.dtype == object else DATATYPES[array.dtype.name],
                "data": array.ravel(),
            }
            for key, array in inputs.items()
        ]
        return f"/v2/models/{name}/infer", {"inputs": jsonable(tensors)}
    rows = len(next(iter(inputs.values())))
    if len(inputs) == 1:
        (array,) = inputs.values()
        instances = array.tolist()
    else:
        instances = [{key: array[i].tolist() for key, array in inputs.items()} for i in range(rows)]
    path = "/predict" if api == "predict" else f"/v1/models/{name}:predict"
    return path, {"instances": instances}


def outputs_from(api: str, body: dict, specs) -> dict[str, np.ndarray]:
    """Each output as a float32 batch, from ``api``'s answer (integers compare exactly)."""
    if api == "v2":
        return {
            tensor["name"]: np.array(tensor["data"], np.float32).reshape(tensor["shape"])
            for tensor in body["outputs"]
        }
    predictions = body["predictions"]
    if len(specs) > 1:
        return {
            spec.name: np.array([row[spec.name] for row in predictions], np.float32).reshape(
                len(predictions), *spec.feature_shape
            )
            for spec in specs
        }
    (spec,) = specs
    array = np.array(predictions, np.float32)
    return {spec.name: array.reshape(len(predictions), *spec.feature_shape)}


def jsonable(value):
    """Arrays inside ``value`` as lists, for JSON."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    return value


def assert_agrees(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """The server's outputs match Keras' to rtol 1e-3 (atol 1e-5 for values near zero)."""
    assert actual.keys() == expected.keys()
    for name, want in expected.items():
        np.testing.assert_allclose(actual[name], want, rtol=1e-3, atol=1e-5, err_msg=name)
