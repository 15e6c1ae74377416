"""Strict configuration: TOML in, frozen dataclasses out, every error names its key.

Every key has a default (so an empty file is a valid config) and a comment in
``config.example.toml``. Unknown keys, wrong types, duplicate camera ids and
malformed URLs are refused before anything starts.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nvr.base.errors import ConfigError
from nvr.base.ids import CAMERA_ID_HINT, is_camera_id
from nvr.base.redact import redact_url
from nvr.config.cluster import ClusterConfig, parse_cluster
from nvr.config.retention import (
    DEFAULT_MIN_AGE,
    MIN_AGE_FLOOR,
    RetentionRuleError,
    RuleSet,
    parse_rules,
)
from nvr.config.sources import validate_camera_url
from nvr.config.tables import Section

log = logging.getLogger("nvr.config")
BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class ServerConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    data_dir: Path = Path("./nvr-data")
    node_id: str = ""
    max_clip_seconds: float = 3600.0
    clips: int = 8  # clips served at once, in total (0: no limit)
    clips_per_token: int = 2  # clips one token (or person) streams at once (0: no limit)
    link_ttl_seconds: float = 600.0  # a signed playback link's time to start playing (plus its range's length)
    live_viewers: int = 200  # live sessions served at once, in total (0: no limit)
    live_viewers_per_token: int = 32  # live sessions of one token (or person) at once: two walls of 16
    live_linger_seconds: float = 30.0  # a substream (live_url) stays open this long after its last viewer
    session_idle_seconds: float = 1800.0  # a console session ends after this long without a request
    session_max_seconds: float = 43200.0  # and this long after its login, whatever happens


@dataclass(frozen=True)
class StorageConfig:
    endpoint: str = ""  # empty: embedded SeaweedFS under data_dir
    bucket: str = "nvr"
    region: str = ""
    access_key: str = ""
    secret_key: str = ""
    access_key_env: str = "NVR_S3_ACCESS_KEY"
    secret_key_env: str = "NVR_S3_SECRET_KEY"
    secure: bool = False
    ca_file: str = ""
    object_lock: bool = False
    max_connections: int = 8
    retry_max: float = 60.0

    def credentials(self) -> tuple[str, str]:
        """Access and secret key, from the file or else from the named environment variables."""
        access = self.access_key or os.environ.get(self.access_key_env, "")
        secret = self.secret_key or os.environ.get(self.secret_key_env, "")
        return access, secret


@dataclass(frozen=True)
class RecordingConfig:
    segment_seconds: float = 10.0
    ffmpeg: str = ""
    spool_dir: Path | None = None
    spool_limit_bytes: int = 20 * 2**30
    min_free_bytes: int = 2 * 2**30
    stall_timeout: float = 0.0  # 0: derived from segment length
    connect_timeout: float = 10.0
    placement_bound: float = 0.5  # seconds a segment's placement may disagree with the wall clock
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    healthy_after: float = 60.0
    stop_grace: float = 8.0


@dataclass(frozen=True)
class KeysConfig:
    dir: Path | None = None
    checkpoint_interval: float = 300.0


@dataclass(frozen=True)
class IndexConfig:
    url: str | None = None  # postgresql://user@host:port/db; None: the SQLite file in data_dir
    password_file: Path | None = None  # else $NVR_INDEX_PASSWORD, else libpq's own (~/.pgpass)


def index_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as ``[index] url``, or None (the one rule, for the config and the CLI)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        return "must be a postgresql:// URL (leave it out for the embedded SQLite index)"
    if parts.password is not None:
        return ("must not carry a password: put it in index.password_file or $NVR_INDEX_PASSWORD "
                "(a URL ends up in process lists, shell history and logs)")
    if not parts.hostname and "host=" not in parts.query:
        return "names no host"
    return None


@dataclass(frozen=True)
class RetentionConfig:
    min_age: float = DEFAULT_MIN_AGE  # footage younger than this is never deleted (and object-locked when enabled)
    rules: RuleSet | None = None  # RuleSet of [retention.default]/[retention.cameras.*]/quota; None: no limits
    sweep_interval: float = 600.0
    min_free_bytes: int | None = None  # storage-full trigger on the spool disk; None: recording.min_free


@dataclass(frozen=True)
class ExportsConfig:
    max_per_token: int = 10  # bundles a requester may keep (done and still on disk, or in progress); 0: no limit
    max_bytes_per_token: int = 20 * 2**30  # bytes of done bundles a requester may keep; 0: no limit
    keep: float = 30 * 86400.0  # a bundle is removed this long after it finished; 0: kept until removed


@dataclass(frozen=True)
class CameraConfig:
    id: str
    url: str
    name: str = ""
    enabled: bool = True
    segment_seconds: float | None = None
    rtsp_transport: str = "tcp"
    audio: bool = False
    # Whose clock times the frames: "camera" (its stream timestamps), "arrival" (when nvr received each
    # frame), or "auto": arrival for http(s) sources (MJPEG cameras send no usable timestamps), else camera.
    timestamps: str = "auto"
    # In a cluster, cameras of higher priority are claimed first when nodes lack capacity for all.
    priority: int = 0
    # A second, low-resolution stream for live walls: opened only while someone watches it, never recorded.
    live_url: str = ""

    @property
    def arrival_time(self) -> bool:
        """True when frames are placed by the time they arrive rather than by the camera's timestamps."""
        if self.timestamps == "auto":
            return self.url.split(":", 1)[0].lower() in ("http", "https")
        return self.timestamps == "arrival"

    @property
    def clock(self) -> str:
        """Which clock times the frames, as the ledger records it: 'camera', 'arrival' or 'encoder' (lavfi)."""
        if self.url.split(":", 1)[0].lower() == "lavfi":
            return "encoder"  # nvr encodes the synthetic demo source itself
        return "arrival" if self.arrival_time else "camera"

    @property
    def display_url(self) -> str:
        """The URL with credentials removed, the only form that may be printed."""
        return redact_url(self.url)

    @property
    def display_live_url(self) -> str | None:
        """``live_url`` with credentials removed, None when the camera declares none."""
        return redact_url(self.live_url) if self.live_url else None

    def to_table(self) -> dict[str, Any]:
        """The camera as a config table (what :func:`camera_from_table` reads back)."""
        table: dict[str, Any] = {"id": self.id, "url": self.url, "name": self.name, "enabled": self.enabled,
                                 "rtsp_transport": self.rtsp_transport, "audio": self.audio}
        if self.timestamps != "auto":
            table["timestamps"] = self.timestamps
        if self.segment_seconds is not None:
            table["segment_seconds"] = self.segment_seconds
        if self.priority:
            table["priority"] = self.priority
        if self.live_url:
            table["live_url"] = self.live_url
        return table


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    exports: ExportsConfig = field(default_factory=ExportsConfig)
    cameras: tuple[CameraConfig, ...] = ()
    source: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.server.data_dir

    @property
    def retention_min_age(self) -> float:
        return self.retention.min_age

    @property
    def spool_dir(self) -> Path:
        return self.recording.spool_dir or self.data_dir / "spool"

    @property
    def keyring_dir(self) -> Path:
        return self.keys.dir or self.data_dir / "keyring"

    @property
    def index_path(self) -> Path:
        """The embedded SQLite index (used when ``[index] url`` is not set)."""
        return self.data_dir / "index.sqlite3"

    @property
    def index_target(self) -> str | Path:
        """What ``storage.index.Index`` opens: the PostgreSQL URL, or the SQLite file."""
        return self.index.url or self.index_path

    def segment_seconds(self, camera: CameraConfig) -> float:
        return camera.segment_seconds or self.recording.segment_seconds

    def stall_timeout(self, camera: CameraConfig) -> float:
        """Seconds without a closed segment after which ffmpeg is restarted."""
        if self.recording.stall_timeout:
            return self.recording.stall_timeout
        return 3 * self.segment_seconds(camera) + self.recording.connect_timeout

    def with_overrides(
        self, *, data_dir: Path | None = None, listen: tuple[str, int] | None = None
    ) -> Config:
        """A copy with command-line overrides applied (they win over the file)."""
        server = self.server
        if data_dir is not None:
            server = replace(server, data_dir=data_dir)
        if listen is not None:
            server = replace(server, listen_host=listen[0], listen_port=listen[1])
        return replace(self, server=server)


# --------------------------------------------------------------------------- parsing


def parse_listen(value: str, key: str = "server.listen", source: str | None = None) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:8080``) into a host and a port."""
    m = re.match(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})$", value)
    if not m:
        raise ConfigError(key, f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8080)", source=source)
    port = int(m.group("port"))
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"port {port} is out of range 0-65535", source=source)
    return (m.group("v6") or m.group("host") or "0.0.0.0"), port


def camera_from_table(table: Any, path: str, source: str | None = None) -> CameraConfig:
    """Validate one camera table (``path`` prefixes the key in errors: ``cameras[0]`` in a file, ``""`` in the API)."""
    s = Section(table, path, source)
    cam_id = s.take("id", str, None)
    if cam_id is None:
        raise s.error("id", "is required")
    if not is_camera_id(cam_id):
        raise s.error("id", f"{cam_id!r} must be {CAMERA_ID_HINT}")
    url = s.take("url", str, None)
    if url is None:
        raise s.error("url", "is required")
    validate_camera_url(url, s.key("url"), source)
    seg = s.take("segment_seconds", (int, float), None)
    if seg is not None and not 1 <= seg <= 600:
        raise s.error("segment_seconds", f"must be between 1 and 600, got {seg}")
    transport = s.take("rtsp_transport", str, "tcp")
    if transport not in ("tcp", "udp"):
        raise s.error("rtsp_transport", f"must be 'tcp' or 'udp', got {transport!r}")
    timestamps = s.take("timestamps", str, "auto")
    if timestamps not in ("auto", "camera", "arrival"):
        raise s.error("timestamps", f"must be 'auto', 'camera' or 'arrival', got {timestamps!r}")
    priority = s.take("priority", int, 0)
    if not -1000 <= priority <= 1000:
        raise s.error("priority", f"must be between -1000 and 1000, got {priority}")
    live_url = s.take("live_url", str, "")  # "" (or absent): no substream
    if live_url:
        validate_camera_url(live_url, s.key("live_url"), source)
    cam = CameraConfig(
        id=cam_id,
        url=url,
        name=s.take("name", str, ""),
        enabled=s.take("enabled", bool, True),
        segment_seconds=float(seg) if seg is not None else None,
        rtsp_transport=transport,
        audio=s.take("audio", bool, False),
        timestamps=timestamps,
        priority=priority,
        live_url=live_url,
    )
    s.finish()
    return cam


def parse_retention(table: Any, source: str | None) -> RetentionConfig:
    """``[retention]``: the floor, the sweep, the storage-full trigger and the initial rules (checked as a whole)."""

    rt = Section(table, "retention", source)
    min_age = rt.duration("min_age", DEFAULT_MIN_AGE, minimum=MIN_AGE_FLOOR)
    sweep_interval = rt.duration("sweep_interval", 600.0, minimum=10.0)
    min_free = rt.size("min_free", -1)
    data: dict[str, Any] = {}
    default = rt.take("default", dict, None)
    if default is not None:
        if "min_age" in default:
            raise rt.error("default.min_age", "set retention.min_age instead: it is the default rule's min_age "
                                              "and the floor of every rule")
        data["default"] = default
    cameras = rt.take("cameras", dict, None)
    if cameras is not None:
        data["cameras"] = cameras
    quota = rt.take("quota", str, None)
    if quota is not None:
        data["quota_bytes"] = quota
    for name in ("high_watermark", "low_watermark"):
        value = rt.take(name, (int, float), None)
        if value is not None:
            data[name] = value
    rt.finish()
    try:
        rules = parse_rules(data, min_age)
    except RetentionRuleError as e:
        key = "quota" if e.field == "quota_bytes" else e.field
        raise ConfigError(f"retention.{key}", e.message, source=source) from None
    return RetentionConfig(min_age=min_age, rules=rules, sweep_interval=sweep_interval,
                           min_free_bytes=None if min_free < 0 else min_free)


def parse_config(data: dict[str, Any], *, source: str | None = None, base: Path | None = None) -> Config:
    """Build a :class:`Config` from parsed TOML; relative paths resolve against ``base``."""
    base = base or Path.cwd()
    top = Section(data, "", source)

    srv = Section(top.take("server", dict, {}), "server", source)
    host, port = parse_listen(srv.take("listen", str, "127.0.0.1:8080"), "server.listen", source)
    server = ServerConfig(
        listen_host=host,
        listen_port=port,
        data_dir=srv.path_("data_dir", base / "nvr-data", base),
        node_id=srv.take("node_id", str, ""),
        max_clip_seconds=srv.duration("max_clip", 3600.0, minimum=1.0),
        clips=srv.count("clips", 8),
        clips_per_token=srv.count("clips_per_token", 2),
        link_ttl_seconds=srv.duration("link_ttl", 600.0, minimum=10.0, maximum=86400.0),
        live_viewers=srv.count("live_viewers", 200),
        live_viewers_per_token=srv.count("live_viewers_per_token", 32),
        live_linger_seconds=srv.duration("live_linger", 30.0, minimum=0.0, maximum=3600.0),
        session_idle_seconds=srv.duration("session_idle", 1800.0, minimum=60.0, maximum=86400.0),
        session_max_seconds=srv.duration("session_max", 43200.0, minimum=300.0, maximum=7 * 86400.0),
    )
    srv.finish()

    st = Section(top.take("storage", dict, {}), "storage", source)
    endpoint = st.take("endpoint", str, "")
    if endpoint and ("://" in endpoint or "/" in endpoint):
        raise st.error("endpoint", f"{endpoint!r} must be HOST:PORT without scheme or path (use storage.secure for TLS)")
    bucket = st.take("bucket", str, "nvr")
    if not BUCKET_RE.match(bucket):
        raise st.error("bucket", f"{bucket!r} is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    max_conn = st.take("max_connections", int, 8)
    if not 1 <= max_conn <= 256:
        raise st.error("max_connections", f"must be between 1 and 256, got {max_conn}")
    storage = StorageConfig(
        endpoint=endpoint,
        bucket=bucket,
        region=st.take("region", str, ""),
        access_key=st.take("access_key", str, ""),
        secret_key=st.take("secret_key", str, ""),
        access_key_env=st.take("access_key_env", str, "NVR_S3_ACCESS_KEY"),
        secret_key_env=st.take("secret_key_env", str, "NVR_S3_SECRET_KEY"),
        secure=st.take("secure", bool, False),
        ca_file=st.take("ca_file", str, ""),
        object_lock=st.take("object_lock", bool, False),
        max_connections=max_conn,
        retry_max=st.duration("retry_max", 60.0, minimum=1.0),
    )
    st.finish()

    rc = Section(top.take("recording", dict, {}), "recording", source)
    seg = rc.duration("segment_seconds", 10.0, minimum=1.0, maximum=600)
    recording = RecordingConfig(
        segment_seconds=seg,
        ffmpeg=rc.take("ffmpeg", str, ""),
        spool_dir=rc.path_("spool_dir", None, base),
        spool_limit_bytes=rc.size("spool_limit", 20 * 2**30),
        min_free_bytes=rc.size("min_free", 2 * 2**30),
        stall_timeout=rc.duration("stall_timeout", 0.0),
        connect_timeout=rc.duration("connect_timeout", 10.0, minimum=1.0),
        placement_bound=rc.duration("placement_bound", 0.5, minimum=0.1, maximum=10),
        backoff_initial=rc.duration("backoff_initial", 1.0, minimum=0.1),
        backoff_max=rc.duration("backoff_max", 60.0, minimum=0.1),
        healthy_after=rc.duration("healthy_after", 60.0, minimum=1.0),
        stop_grace=rc.duration("stop_grace", 8.0, minimum=0.5),
    )
    if rc.take("max_drift", (str, int, float), None) is not None:
        # Accepted so that an upgraded node keeps recording; placement is now checked at every segment.
        log.warning("%s: recording.max_drift is no longer used (each segment is checked against "
                    "recording.placement_bound); remove it", source)
    if recording.backoff_max < recording.backoff_initial:
        raise rc.error("backoff_max", "must not be smaller than recording.backoff_initial")
    rc.finish()

    ks = Section(top.take("keys", dict, {}), "keys", source)
    keys = KeysConfig(
        dir=ks.path_("dir", None, base),
        checkpoint_interval=ks.duration("checkpoint_interval", 300.0, minimum=1.0),
    )
    ks.finish()

    ix = Section(top.take("index", dict, {}), "index", source)
    index = IndexConfig(url=ix.take("url", str, "") or None, password_file=ix.path_("password_file", None, base))
    if index.url is not None and (problem := index_url_problem(index.url)):
        raise ix.error("url", problem)
    ix.finish()

    cluster = parse_cluster(top.take("cluster", dict, {}), source, index_url=index.url, node_id=server.node_id)

    retention = parse_retention(top.take("retention", dict, {}), source)

    ex = Section(top.take("exports", dict, {}), "exports", source)
    exports = ExportsConfig(max_per_token=ex.count("max_per_token", 10), max_bytes_per_token=ex.size("max_bytes_per_token", 20 * 2**30),
                            keep=ex.duration("keep", 30 * 86400.0))
    ex.finish()

    raw_cams = top.take("cameras", list, [])
    cameras: list[CameraConfig] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(raw_cams):
        cam = camera_from_table(table, f"cameras[{i}]", source)
        if cam.id in seen:
            raise ConfigError(
                f"cameras[{i}].id", f"duplicate camera id {cam.id!r} (also cameras[{seen[cam.id]}].id)", source=source
            )
        seen[cam.id] = i
        cameras.append(cam)
    top.finish()
    return Config(server=server, storage=storage, recording=recording, keys=keys, index=index, cluster=cluster,
                  retention=retention,
                  exports=exports, cameras=tuple(cameras), source=source)


def load_config(path: Path | None) -> Config:
    """Load and validate ``path``; ``None`` gives the all-defaults config rooted at the cwd."""
    if path is None:
        return parse_config({})
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError("--config", f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError("--config", f"{path} can't be read: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("(syntax)", f"not valid TOML: {e}", source=source) from None
    return parse_config(data, source=source, base=path.parent.resolve())


DEMO_CAMERAS = (
    CameraConfig(id="demo-1", name="Demo camera 1", url="lavfi:testsrc2=size=640x360:rate=15"),
    CameraConfig(id="demo-2", name="Demo camera 2", url="lavfi:smptehdbars=size=640x360:rate=10"),
)
