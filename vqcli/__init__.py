"""vq: learned image compression with a residual-VQ autoencoder.

The Python API lives in the submodules (imported lazily so that the CLI starts fast):
`vqcli.model` (VQVAE), `vqcli.weights` (load/save), `vqcli.codec` (compress/decompress bytes),
`vqcli.train` (training loop).
"""

__version__ = "0.1.0"
