"""synbt: synthetic breast tumors in 3D DCE-MRI (SynBT), as an offline dataset factory."""

__version__ = "0.1.0"
