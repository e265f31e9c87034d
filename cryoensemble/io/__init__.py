"""Reading atomic models, MD trajectories and voxel grids (gemmi, MDAnalysis, mrcfile)."""

from .mrc import read_array_from_mrc as read_array_from_mrc, write_volume_to_mrc as write_volume_to_mrc
from .structures import (
    AtomicModel as AtomicModel,
    infer_element as infer_element,
    read_atomic_model as read_atomic_model,
    read_atoms_from_pdb as read_atoms_from_pdb,
)
from .trajectories import (
    TrajectoryReader as TrajectoryReader,
    trajectory_elements as trajectory_elements,
)


__all__ = [
    "TrajectoryReader",
    "AtomicModel",
    "infer_element",
    "read_array_from_mrc",
    "read_atomic_model",
    "read_atoms_from_pdb",
    "trajectory_elements",
    "write_volume_to_mrc",
]
