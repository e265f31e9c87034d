"""Contrast transfer: the CTF of the weak-phase approximation, in cryojax's conventions."""

from ._ctf import (
    AbstractCTF as AbstractCTF,
    AstigmaticCTF as AstigmaticCTF,
    ContrastTransferTheory as ContrastTransferTheory,
)
