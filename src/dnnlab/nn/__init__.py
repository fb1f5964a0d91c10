"""Model layers: Keras-defined initializers, activations by name, and the deep MLP."""

from dnnlab.nn.activations import activation_fn, make_activation
from dnnlab.nn.init import fans, init_, variance
from dnnlab.nn.mlp import MLP, Block, build_mlp, hidden_sizes

__all__ = ["MLP", "Block", "activation_fn", "build_mlp", "fans", "hidden_sizes", "init_",
           "make_activation", "variance"]
