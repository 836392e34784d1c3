"""Old import paths, kept while their callers move: nothing is defined here.

``_codec`` was split along its seams. Its names now live in:

- ``_archive``: ``Compression``, ``Limits``, ``TarFacts``, ``iter_tar``, ``gzip_members``,
  ``gunzip_members``, ``extract_tar``;
- ``_files``: ``check_source``, ``iter_file``, ``write_file``, ``HoleWriter``;
- ``_statecodec``: ``dumps_state``, ``loads_state`` (one plain cloudpickle, beside the
  streamed format).

``Checkpoint``, the store, the decorator and the package's ``__init__`` still import
``Compression``, ``Limits``, ``dumps_state`` and ``loads_state`` from here; once they import
from the modules above, this module goes.
"""

from __future__ import annotations

from ._archive import Compression, Limits
from ._statecodec import dumps_state, loads_state

__all__ = ["Compression", "Limits", "dumps_state", "loads_state"]
