"""Reading atomic models, MD trajectories and voxel grids (gemmi, mmdf, mdtraj, MDAnalysis,
mrcfile)."""

from .mrc import read_array_from_mrc as read_array_from_mrc, write_volume_to_mrc as write_volume_to_mrc
from .structures import (
    AtomicModel as AtomicModel,
    atomic_model_to_mmdf as atomic_model_to_mmdf,
    bulk_centre as bulk_centre,
    infer_element as infer_element,
    mmdf_to_atoms as mmdf_to_atoms,
    mmdf_to_topology as mmdf_to_topology,
    read_atomic_model as read_atomic_model,
    read_atoms_from_pdb as read_atoms_from_pdb,
    read_topology_from_pdb as read_topology_from_pdb,
    selection_mask as selection_mask,
)
from .trajectories import (
    TrajectoryReader as TrajectoryReader,
    trajectory_elements as trajectory_elements,
)


__all__ = [
    "TrajectoryReader",
    "AtomicModel",
    "atomic_model_to_mmdf",
    "bulk_centre",
    "infer_element",
    "mmdf_to_atoms",
    "mmdf_to_topology",
    "read_array_from_mrc",
    "read_atomic_model",
    "read_atoms_from_pdb",
    "read_topology_from_pdb",
    "selection_mask",
    "trajectory_elements",
    "write_volume_to_mrc",
]
