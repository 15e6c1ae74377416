"""The ``weed`` command lines of the embedded S3: the loopback-only private server, and an operator's shell."""

from __future__ import annotations

from pathlib import Path

from storage.embedded_s3.layout import LOOPBACK


def weed_command(weed: str, s3: Path, socket_dir: Path, ports: dict[str, int], volume_size_limit_mb: int) -> list[str]:
    """The argv of one ``weed server`` for the data dir's ``s3/`` directory, every choice explained."""
    return [
        weed,
        # Log to stderr (our weed.log) instead of glog files in /tmp.
        "-logtostderr",
        # Our TOML files only; its security.toml closes the gRPC and volume ports (security.py).
        f"-config_dir={s3 / 'conf'}",
        "server",
        f"-dir={s3 / 'data'}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={ports['master_grpc']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={ports['volume_grpc']}",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={ports['filer_grpc']}",
        f"-filer.localSocket={socket_dir / 'filer.sock'}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={ports['s3_grpc']}",
        f"-s3.localSocket={socket_dir / 's3.sock'}",
        f"-s3.config={s3 / 's3.json'}",
        # Listeners that default to fixed ports (Iceberg 8181, Lance 9101) would clash
        # between instances; metrics are off by default, keep them so.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-metricsPort=0",
        # No IAM API on the S3 port: identities come from s3.json only.
        "-s3.iam=false",
        # The master and filer HTTP APIs are unauthenticated: any local user could
        # e.g. GET /col/delete?collection=<bucket> and wipe an object-locked bucket.
        # S3 only needs their gRPC (and the volume server's HTTP).
        "-disableHttp",
        "-filer.disableHttp",
        # A PUT to a mistyped bucket must fail, not create a bucket without object lock;
        # DeleteBucket must not recursively delete a non-empty (locked) bucket.
        "-s3.autoCreateBucket=false",
        "-s3.allowDeleteBucketNotEmpty=false",
        "-master.telemetry=false",
        "-volume.max=0",
        f"-master.volumeSizeLimitMB={volume_size_limit_mb}",
        # Single node: no peers to drain to (saves 10 s per stop), and no election to
        # wait for (a restart otherwise waits the 10 s default before becoming leader).
        "-volume.preStopSeconds=0",
        "-master.electionTimeout=1s",
    ]


def weed_shell_command(weed: str, s3: Path, ports: dict[str, int]) -> list[str]:
    """The argv of an operator's ``weed shell`` into the running server, with the client certificate.

    It reads the server's own ``security.toml`` (``[grpc.client]`` and the JWT read key), so
    only the user owning the data dir can run it; the ports are those of ``s3/ports.json``.
    """
    return [
        weed,
        f"-config_dir={s3 / 'conf'}",
        "shell",
        f"-master={LOOPBACK}:{ports['master']}.{ports['master_grpc']}",
    ]
