"""A team's own layer, registered with Keras: the zoo's ``custom_layer`` model uses it."""

import keras


@keras.saving.register_keras_serializable(package="zoo")
class ScaledSoftplus(keras.layers.Layer):
    """softplus(x) times a learned per-feature scale."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, inputs):
        return keras.ops.softplus(inputs) * self.scale
