"""Readiness of a started weed: the volume server registered and S3 reading and writing end to end."""

from __future__ import annotations

import http.client
import io

import urllib3
from minio import Minio
from minio.error import S3Error

from storage.embedded_s3.layout import LOOPBACK, S3Endpoint

# A bucket of the embedded store's own, holding one object that start() reads back.
PROBE_BUCKET = "nvr-embedded-readiness"
PROBE_OBJECT = "probe"



class ReadinessProbe:
    """Checks that weed serves S3 end to end: volume server registered, S3 authenticates."""

    def __init__(self, endpoint: S3Endpoint, volume_port: int):
        self._volume_port = volume_port
        # No retries and short timeouts: the caller polls, and a hanging probe would blow
        # the start deadline.
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=2.0, read=5.0),
            retries=urllib3.Retry(total=0, raise_on_status=False),
        )
        self._client = Minio(
            endpoint.endpoint,
            access_key=endpoint.access_key,
            secret_key=endpoint.secret_key,
            secure=endpoint.secure,
            http_client=self._http,
        )

    def check(self) -> str | None:
        """None when ready, else a short reason."""
        # After a restart S3 may answer before the volume server has re-registered with the
        # master; reads of existing objects would fail until it has.  /healthz answers 200
        # only while the volume server heartbeats to the master.
        conn = http.client.HTTPConnection(LOOPBACK, self._volume_port, timeout=2.0)
        try:
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
        except OSError as e:
            return f"volume server not answering: {e}"
        finally:
            conn.close()
        if status != 200:
            return f"volume server not registered with the master (healthz {status})"
        try:
            self._client.list_buckets()
        except Exception as e:  # any failure just means "not yet"
            return f"S3 list_buckets failed: {type(e).__name__}: {e}"
        # The filer learns volume locations from the master a moment after the volume server
        # registers; until then GETs of existing objects answer 500. Reading back a probe object
        # written by an earlier start (or now, on a fresh store) proves reads work end to end.
        try:
            if not self._client.bucket_exists(PROBE_BUCKET):
                self._client.make_bucket(PROBE_BUCKET)
            try:
                self._client.stat_object(PROBE_BUCKET, PROBE_OBJECT)
            except S3Error as e:
                if e.code != "NoSuchKey":
                    raise
                body = b"nvr embedded S3 readiness probe\n"
                self._client.put_object(PROBE_BUCKET, PROBE_OBJECT, io.BytesIO(body), len(body))
            resp = self._client.get_object(PROBE_BUCKET, PROBE_OBJECT)
            try:
                resp.read()
            finally:
                resp.close()
                resp.release_conn()
        except Exception as e:  # any failure just means "not yet"
            return f"S3 probe object not readable yet: {type(e).__name__}: {e}"
        return None

    def close(self) -> None:
        self._http.clear()


