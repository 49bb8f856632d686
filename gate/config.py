"""The gate's configuration: one pydantic schema, loaded from YAML with line-precise errors."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from engines.errors import FacegateError
from gate.schema import DEFAULT_PREFIX

REDIS_URL_ENV = "FACEGATE_REDIS_URL"
HTTP_TOKEN_ENV = "FACEGATE_HTTP_TOKEN"
MIN_TOKEN_CHARS = 16
CAMERA_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ConfigError(FacegateError):
    """A configuration file is unreadable or invalid (the message names field and line)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RedisConfig(_Section):
    url: str | None = Field(default=None, description=f"redis:// or rediss:// URL; else ${REDIS_URL_ENV}")
    prefix: str = Field(default=DEFAULT_PREFIX, description="key prefix, so deployments can share one Redis")
    events_maxlen: int = Field(default=10_000, ge=100, description="approximate length cap of the event stream")
    buffer_size: int = Field(default=10_000, ge=1, description="entries held in memory while Redis is away")
    buffer_max_bytes: int = Field(default=256 * 2**20, ge=0, description="… and at most this many bytes of them "
                                  "(events carry JPEGs); beyond either bound, entries go to the spill folder")
    spill_dir: str | None = Field(default=None, description="spill folder beyond that (default: one per Redis "
                                  "address and prefix under cache/spool); kept across restarts: the next gate "
                                  "process on it delivers it first")
    spill_max_bytes: int = Field(default=512 * 2**20, ge=0, description="bound on the spill folder's pending "
                                 "bytes; beyond it: dropped and counted")
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None


class CameraConfig(_Section):
    name: str
    url: str = Field(description="rtsp://, rtsps://, http(s):// or a file path")
    transport: Literal["tcp", "udp"] = "tcp"
    detection_fps: float | None = Field(default=None, gt=0, description="overrides detection.fps for this camera")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not CAMERA_NAME.match(value):
            raise ValueError("camera names use letters, digits, '_', '-', '.' (at most 64)")
        return value


class SourceConfig(_Section):
    open_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=10.0, gt=0, description="a read waits this long for data (at most "
                                  "watchdog_s / 2: FFmpeg's RTSP reader gives up at the second time-out)")
    backoff_initial_s: float = Field(default=1.0, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    watchdog_s: float = Field(default=15.0, gt=0, description="no frame for this long: reported offline, open "
                              "tracks end, the reader reconnects (also when packets still arrive, e.g. audio)")
    stop_timeout_s: float = Field(default=10.0, gt=0, description="a stopping camera's thread may take this long "
                                  "(it finishes its current read); beyond it the camera is abandoned")
    hwaccel: Literal["auto", "cuda", "none"] = Field(default="auto", description="auto: NVDEC if the process's "
                                                     "one probe found it usable, else software; cuda: NVDEC or the "
                                                     "camera goes to error naming the cause; none: software")
    loop_files: bool = Field(default=False, description="restart file sources at their end (demos)")
    realtime_files: bool = Field(default=True, description="pace file sources at their frame rate")


class MotionConfig(_Section):
    enabled: bool = Field(default=True, description="detect only when something moves, while a track is alive, "
                          "or every idle_detect_s")
    width: int = Field(default=320, ge=32, description="width of the grayscale image the motion test compares")
    threshold: float = Field(default=15.0, gt=0, le=255, description="grey levels a pixel must change by")
    min_area: float = Field(default=0.0005, gt=0, lt=1, description="fraction of the image that must change")
    alpha: float = Field(default=0.05, gt=0, le=1, description="background learning rate per analysed frame")
    idle_detect_s: float = Field(default=5.0, gt=0, description="detect at least this often regardless of motion")


class DetectionConfig(_Section):
    fps: float = Field(default=5.0, gt=0, description="detections per second per camera")
    max_side: int = Field(default=640, ge=64, description="frames are detected at this longer side")
    score_threshold: float = Field(default=0.6, ge=0, le=1)
    threads: int = Field(default=1, ge=0, description="ONNX Runtime threads per detection (cameras already run "
                         "in parallel; 0 = all cores)")
    motion: MotionConfig = MotionConfig()


class TrackingConfig(_Section):
    iou_threshold: float = Field(default=0.3, gt=0, lt=1)
    min_hits: int = Field(default=2, ge=1, description="a track counts after this many matched detections")
    max_unseen_s: float = Field(default=2.0, gt=0, description="a track ends after this long unmatched")


class BestShotConfig(_Section):
    min_face_px: float = Field(default=32.0, ge=0)
    edge_margin_px: float = Field(default=2.0, ge=0)
    update_margin: float = Field(default=5.0, ge=0, description="quality gain that triggers an update (in "
                                 "quality.method's units)")
    update_interval_s: float = Field(default=2.0, ge=0, description="at most one update per track this often")
    score_interval_s: float = Field(default=0.4, ge=0, description="score a track at most this often (0: every "
                                    "detection); scoring is the gate's largest CPU cost after decoding")
    face_jpeg_max_bytes: int = Field(default=64 * 1024, ge=1024)
    frame_jpeg_max_bytes: int = Field(default=256 * 1024, ge=1024)
    frame_jpeg_max_side: int = Field(default=640, ge=64)
    min_quality: float | None = Field(default=None, ge=0, le=100, description="tracks whose best stays below this "
                                      "publish no new/update, only an end with below_min_quality=1 (none = off); "
                                      "in quality.method's units")


class QualityConfig(_Section):
    method: Literal["model", "embedding-norm"] = Field(default="model", description="model: the SDD-FIQA quality "
                                                       "model (0..100); embedding-norm: SFace's embedding norm "
                                                       "before normalisation (training-free; about 2.5 to 15; "
                                                       "no quality bands)")
    model: str | None = Field(default=None, description="model folder or name; default: current")
    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    batch_size: int = Field(default=32, ge=1)
    threads: int = Field(default=1, ge=0, description="ONNX Runtime threads for scoring (0 = all cores); one "
                         "costs the least CPU per face, more lower the latency on a machine with idle cores")
    queue_size: int = Field(default=256, ge=1, description="bounded: oldest work dropped beyond it")
    bands_recognizer: str | None = Field(default=None, description="recogniser whose row of the model's threshold "
                                         "table names the quality bands (default: the table's first)")

    @field_validator("model", "backend")
    @classmethod
    def _model_settings(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("method") == "embedding-norm":
            if info.field_name == "model" and value is not None:
                raise ValueError("method embedding-norm scores with SFace, not a quality model: remove quality.model")
            if info.field_name == "backend" and value == "tensorrt":
                raise ValueError("method embedding-norm runs on ONNX Runtime only: use auto or onnxruntime")
        return value


class ScaleOutConfig(_Section):
    enabled: bool = Field(default=False, description="share cameras with other workers through Redis leases")
    lease_s: float = Field(default=10.0, ge=1.0, description="a dead worker's cameras move after this long")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HttpConfig(_Section):
    token: str | None = Field(default=None, min_length=MIN_TOKEN_CHARS, description="bearer token the API and page "
                              f"require; else ${HTTP_TOKEN_ENV}; none = no token (loopback only)")
    host: str = Field(default="127.0.0.1", description="address the console and API listen on")
    port: int | None = Field(default=None, ge=0, le=65535, description="console and API port (0: any free one); "
                             "none = off")

    @field_validator("host")
    @classmethod
    def _token_beyond_loopback(cls, value: str, info: ValidationInfo) -> str:
        if not is_loopback(value) and not (info.data.get("token") or os.environ.get(HTTP_TOKEN_ENV)):
            raise ValueError(f"listening on {value} (beyond loopback) needs a token: set http.token or "
                             f"${HTTP_TOKEN_ENV}")
        return value

    def resolved_token(self) -> str | None:
        """The token from the config, else from the environment (checked like the config's)."""
        token = self.token or os.environ.get(HTTP_TOKEN_ENV) or None
        if token is not None and len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"${HTTP_TOKEN_ENV} must be at least {MIN_TOKEN_CHARS} characters")
        return token


class GateConfig(_Section):
    redis: RedisConfig = RedisConfig()
    cameras: list[CameraConfig] = Field(default_factory=list)
    source: SourceConfig = SourceConfig()
    detection: DetectionConfig = DetectionConfig()
    tracking: TrackingConfig = TrackingConfig()
    bestshot: BestShotConfig = BestShotConfig()
    quality: QualityConfig = QualityConfig()
    scaleout: ScaleOutConfig = ScaleOutConfig()
    metrics_port: int | None = Field(default=None, description="port of /metrics and /healthz without the console "
                                     "(with http.port they are served there); none = off")
    metrics_host: str = Field(default="127.0.0.1", description="address the endpoint listens on; 0.0.0.0 lets a "
                              "Prometheus server on another machine scrape it")
    health_stale_s: float = Field(default=30.0, gt=0, description="/healthz is 503 when a camera that should run "
                                  "produced no frame for this long, or Redis was unreachable this long")
    http: HttpConfig = HttpConfig()

    @field_validator("http")
    @classmethod
    def _metrics_in_one_place(cls, value: HttpConfig, info: ValidationInfo) -> HttpConfig:
        if value.port is not None and info.data.get("metrics_port") is not None:
            raise ValueError("with http.port set, /metrics and /healthz are served there: remove metrics_port")
        return value

    def redis_url(self, override: str | None = None) -> str | None:
        return override or os.environ.get(REDIS_URL_ENV) or self.redis.url


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """Line (1-based) of the YAML node at pydantic's error location."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                key = next((k for k, _ in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def load_config(path: Path | None) -> GateConfig:
    """Read and validate a YAML config; ``None`` gives the defaults."""
    if path is None:
        return GateConfig()
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        return GateConfig.model_validate(data)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            field = ".".join(str(p) for p in loc)
            line = _line_of(node, loc)
            kind = "unknown field" if error["type"] == "extra_forbidden" else error["msg"]
            messages.append(f"{path} line {line}: {field}: {kind}")
        raise ConfigError("; ".join(messages)) from None
