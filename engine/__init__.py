"""What Theano 1.0.5 and Lasagne 0.1 lack, for any network on today's Python.

Importing this package configures Theano once, before Theano is imported
(``compat``): the project's modules import ``engine`` (or one of its modules)
and need nothing else. The package knows nothing of ResNets or CIFAR and never
imports a top-level module of the project.

- ``compat``: Theano's flags, BLAS, private compile folder, recursion limit,
  Lasagne 0.1's missing ``downsample`` module; ``keep_freed_memory`` for
  programs to call when they start.
- ``layers``: a cross-correlation convolution layer and batch normalisation.
- ``ops``: the C ops those layers run on the CPU (C in ``c_code/``).
- ``fusion``: graph rewrites that fold batch norm, ReLU and residual sums into
  those ops in compiled functions.
- ``updates``: Torch's Nesterov SGD, Lasagne's, and the two ways of weight decay.
- ``loop``: a batch prefetcher, a progress line with an ETA, stop-on-signal
  handling, and the description of the machine and libraries of a run.
"""
from . import compat  # noqa: F401  (configures Theano before anything imports it)
