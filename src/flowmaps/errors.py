"""The errors a user can cause or meet, each with the exit status the command line gives it.

Every failure that is the user's input or the machine's state (a bad config, data file, checkpoint or pair
store; a full disk; training that diverged) is a :class:`FlowmapsError` whose message is one line naming the
file or key and the problem. The command line prints exactly these as ``flowmaps: error: …`` and exits with
their ``status``; any other exception is a bug in flowmaps and shows its traceback.

=====  ==================================================================================================
0      done
1      the operating system refused a write (disk full, read-only, permissions); the previous file is kept
2      bad input: arguments, config, data, checkpoint, pair store, run directory, device; nothing was written
3      training stopped on a non-finite loss, gradient or weight; the last good checkpoint is kept
=====  ==================================================================================================
"""

from __future__ import annotations


class FlowmapsError(Exception):
    """Base of every user-facing error; ``status`` is the command's exit status."""

    status = 2


class ConfigError(FlowmapsError):
    """A configuration, argument or combination of them that cannot run."""


class DataError(FlowmapsError):
    """A data file or data set that cannot be used."""


class CheckpointError(FlowmapsError):
    """A checkpoint that is missing, corrupt, unsafe, or does not fit the run."""


class StoreError(FlowmapsError):
    """A store on disk (teacher pairs, prepared images, latents) that is missing, corrupt, incomplete or made by
    something else than asked."""


class BusyError(FlowmapsError):
    """A folder another process is writing (a run directory or a pair store)."""


class StorageError(FlowmapsError):
    """The operating system refused a write; the previous version of the file is kept."""

    status = 1


class NonFiniteError(FlowmapsError):
    """Training produced a non-finite loss, gradient or weight (``train.nonfinite: stop``)."""

    status = 3
