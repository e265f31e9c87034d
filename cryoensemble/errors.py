"""Errors that name the input and what is wrong with it."""


class CryoEnsembleError(Exception):
    """Base class of cryoensemble's own errors."""


class UnsupportedElementError(CryoEnsembleError, ValueError):
    """An element that a scattering table does not cover."""


class StructureReadError(CryoEnsembleError, ValueError):
    """A structure file that cannot be read into atoms (malformed, empty, NaN, ...)."""


class ElementInferenceError(StructureReadError):
    """An atom whose element cannot be inferred from a file with no element column."""


class BatchOptionsError(CryoEnsembleError, ValueError):
    """An invalid `batch_options` entry."""


class EnsembleSourceError(CryoEnsembleError, ValueError):
    """A source whose conformations cannot be rendered together."""


class StoreMismatchError(CryoEnsembleError, ValueError):
    """A store made with other parameters, or a path that is not a cryoensemble store."""


class StoreLocationError(CryoEnsembleError, ValueError):
    """A store URL that cannot be used: unknown scheme, missing fsspec driver, unreachable."""


class StoreLeaseError(CryoEnsembleError, RuntimeError):
    """Another live process holds the store's writer lease."""


class StoreCorruptionError(CryoEnsembleError, ValueError):
    """Stored data that fails its checksum or is missing, named by conformation."""


class UsageError(CryoEnsembleError, ValueError):
    """Command-line options that do not go together (exit code 2)."""


class PlanError(CryoEnsembleError, ValueError):
    """A render that cannot work as asked: atoms outside the box, more memory per task
    than a worker has, ..."""


class InfrastructureError(CryoEnsembleError, RuntimeError):
    """A resource that is missing or failed: a scheduler, a GPU, a disk, a worker."""


class OutsideBoxWarning(UserWarning):
    """Atoms that fall outside the box and are not rendered."""
