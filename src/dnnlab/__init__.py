"""dnnlab: train deep MLPs and settle the questions of "Training Deep Neural Networks" by measurement."""
__version__ = "0.1.0"
