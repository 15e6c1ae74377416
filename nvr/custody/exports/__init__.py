"""Evidence exports: owned background jobs that verify, decrypt, stitch, sign, zip and record in the ledger.

A job (``POST /api/v1/exports``) goes ``queued`` → ``running`` → ``done`` or
``failed``; its row lives in the index table ``exports``, so the status
survives a restart. A job still queued or running when the server stopped is
marked ``failed`` ("interrupted") at the next start: bundles are never
half-built in place (staging directory, then an atomic rename).

* ``table``: the ``exports`` table, :class:`ExportJob`, the service's queries;
* ``build``: one bundle, from verification to the ``export`` ledger records;
* ``service``: :class:`ExportService`, the jobs' tasks, the limits per
  requester and the expiry of old bundles (``[exports]``).

Bundles are kept under ``<data_dir>/exports`` (mode 0700, files 0600): they
hold decrypted footage.
"""

from nvr.custody.exports.build import Builder, ExportFailed
from nvr.custody.exports.service import (
    ExportLimited,
    ExportService,
    expiry_interval,
    fresh_private_dir,
)
from nvr.custody.exports.table import ExportJob, Usage

__all__ = ["Builder", "ExportFailed", "ExportJob", "ExportLimited", "ExportService", "Usage",
           "expiry_interval", "fresh_private_dir"]
