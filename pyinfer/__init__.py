"""pyinfer: compressed neural networks that run faster on CPUs and ARM boards.

The runtime loads ``.pinf`` files and runs them on the kernels of the ``kernels``
package; the converter (``pyinfer.convert``) produces them.
"""

from kernels._version import __version__

__all__ = ["__version__"]
