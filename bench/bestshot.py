"""Benchmark: with the gate in front, does recognition identify more people than with simple rules?

Protocol:
- people: an identity-folder dataset nobody trained on (default: the Pins held-out split,
  20 people). Per person one enrolment photo (the most typical of its first photos, by
  SFace) forms the gallery and never appears in a walk;
- videos: synthetic walk-bys (:mod:`bench.walkby`): two to four people in view at once,
  faces 30–200 px, motion blur, defocus, exposure swings, compression, occlusion, several
  photos per walk; H.264, 1280×720, 25 fps;
- the real gate (``gate.runner.Gate``: detection, tracking, scoring, best shot, Redis
  Streams through an embedded ``redis-server``) reads every video as a file camera;
  events are read back from Redis with a consumer group, as a subscriber does;
- file cameras are read faster than real time without bending the gate's timing: frame
  times come from the video's timestamps (detection rate, score interval, track timeouts
  and update intervals follow video time), and a file read faster than real time waits
  for the scorer instead of dropping crops (``ScoringQueue.submit(wait=True)``); dropped
  crops are counted and printed;
- every scored candidate is recorded through the scoring queue's ``observers`` hook, so the
  rules (:mod:`bench.selection_rules`) choose among exactly the faces the gate chose from;
  all faces (the gate's and the rules') go through the same JPEG encoding as a published
  face;
- identification: rank-1 of each published track's face against the gallery of all
  identities, with SFace and with dlib's ResNet, and the mean genuine similarity;
- tracking: end events per person that was published, purity (fraction of tracks whose
  candidates all overlap one person), people never published.

The last two lines (dlib, then SFace)::

    rank1_gate=… rank1_best_rule=… best_rule=… rank1_oracle=… events_per_person=… purity=… recogniser=…

    python bench/bestshot.py [--walkbys 120] [--videos 4] [--motion both] [--recognisers sface,dlib]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.ground_truth import Candidate, TruthIndex, match_persons, sync_clock, track_truth  # noqa: E402
from bench.selection_rules import BASELINES, PublishedTrack, Scores, evaluate  # noqa: E402

HELDOUT_CANDIDATES = (ROOT.parent / "shared/data/faces/pins/heldout", Path("/work/shared/data/faces/pins/heldout"))


class CandidateRecorder:
    """The scoring observer: keeps every scored face (crop as it would be published) with its quality."""

    def __init__(self, face_jpeg_max_bytes: int) -> None:
        self.face_jpeg_max_bytes = face_jpeg_max_bytes
        self.items: list[Candidate] = []

    def __call__(self, job, quality: float) -> None:
        from gate.bestshot import encode_capped

        sample = job.sample
        data = encode_capped(sample.crop, self.face_jpeg_max_bytes)
        crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        self.items.append(Candidate(job.shot.camera, sample.track_id, sample.ts, sample.bbox.copy(),
                                    sample.det_score, quality, crop))


@dataclass
class GateRun:
    """What one pass of the gate over the videos produced."""

    motion: bool
    model: str
    candidates: list[Candidate]
    end_events: list  # gate.schema.Event of type end
    events: int
    scored: int
    dropped: int
    frames: int
    detections: int
    motion_skipped: int
    wall_s: float
    cpu_s: float


def gate_config(videos: list[Path], motion: bool, model: str | None, prefix: str, settings: list[str]):
    from gate.config import GateConfig

    data: dict = {"cameras": [{"name": f"walkby{i:02d}", "url": str(path)} for i, path in enumerate(videos)],
                  "source": {"realtime_files": False, "loop_files": False},
                  "detection": {"motion": {"enabled": motion}}, "quality": {"model": model},
                  "redis": {"prefix": prefix}}
    for item in settings:
        key, _, value = item.partition("=")
        *sections, name = key.split(".")
        target = data
        for section in sections:
            target = target.setdefault(section, {})
        target[name] = yaml.safe_load(value)
    return GateConfig.model_validate(data)


def run_gate(videos: list[Path], redis_url: str, motion: bool, model: str | None = None,
             settings: list[str] | None = None, timeout_s: float = 3600, progress: bool = False) -> GateRun:
    """Run the real gate over ``videos`` (one file camera each) until they end; read its events from Redis."""
    import av
    from tqdm import tqdm

    from gate.client import EventSubscriber
    from gate.runner import Gate

    prefix = f"bench-{'motion' if motion else 'always'}-{time.time_ns()}:"
    config = gate_config(videos, motion, model, prefix, settings or [])
    gate = Gate(config, redis_url)
    recorder = CandidateRecorder(config.bestshot.face_jpeg_max_bytes)
    gate.scoring.observers.append(recorder)
    stop = threading.Event()
    runner = threading.Thread(target=gate.run, args=(stop,), name="gate", daemon=True)
    total = 0
    for path in videos:
        with av.open(str(path)) as container:
            total += container.streams.video[0].frames
    bar = tqdm(total=total, desc=f"gate (motion {'on' if motion else 'off'})", unit="frame", disable=not progress)
    started, cpu_started = time.monotonic(), time.process_time()
    runner.start()
    deadline = started + timeout_s
    workers: list = []
    while time.monotonic() < deadline:
        workers = list(gate.workers.values())
        bar.n = sum(w.frames for w in workers)
        bar.refresh()
        if len(workers) == len(videos) and not any(w.alive for w in workers):
            break
        stop.wait(0.5)  # polling the workers' state with a deadline
    else:
        stop.set()
        raise TimeoutError(f"the gate did not finish the videos within {timeout_s:.0f} s")
    stop.set()
    runner.join(120)
    wall_s, cpu_s = time.monotonic() - started, time.process_time() - cpu_started
    bar.close()
    events = []
    with EventSubscriber(redis_url, group="bestshot-bench", consumer="bench", prefix=prefix) as subscriber:
        while batch := subscriber.read(count=1000, block_ms=200):
            events.extend(event for _, event in batch)
            subscriber.ack(*(entry_id for entry_id, _ in batch))
    return GateRun(motion, gate.model_tag, recorder.items, [e for e in events if e.type == "end"], len(events),
                   gate.scoring.scored, gate.scoring.dropped, sum(w.frames for w in workers),
                   sum(w.detections for w in workers), sum(w.motion_skipped for w in workers), wall_s, cpu_s)


@dataclass
class TrackingResult:
    persons: int
    published_persons: int
    never_published: list[tuple[str, int]]  # (camera, person)
    events_assigned: int
    events_unassigned: int  # end events whose track overlapped no true face
    events_per_person: float
    purity: float  # fraction of published tracks whose candidates all overlap one person
    mean_purity: float
    sync_iou: dict[str, float] = field(default_factory=dict)  # camera → mean best IoU at the clock offset
    gate_choice_mismatches: int = 0  # end events whose face is not the highest-quality recorded candidate
    tracks: list[PublishedTrack] = field(default_factory=list)


def _decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def match_run(run: GateRun, truths: dict[str, dict]) -> TrackingResult:
    """Put the run's candidates and end events onto the ground truth (``truths``: camera → truth)."""
    sync = {}
    by_camera: dict[str, list[Candidate]] = {}
    for candidate in run.candidates:
        by_camera.setdefault(candidate.camera, []).append(candidate)
    for camera, truth in truths.items():
        index = TruthIndex(truth)
        members = by_camera.get(camera, [])
        _, sync[camera] = sync_clock(members, index)
        match_persons(members, index)
    owners = track_truth(run.candidates)
    grouped: dict[tuple[str, int], list[Candidate]] = {}
    for candidate in run.candidates:
        grouped.setdefault((candidate.camera, candidate.track), []).append(candidate)
    identities = {(camera, w["person"]): w["identity"] for camera, t in truths.items() for w in t["walkers"]}
    published: dict[tuple[str, int], int] = {}
    tracks, unassigned, mismatches, purities = [], 0, 0, []
    for event in run.end_events:
        key = (event.camera, event.track)
        owner = owners.get(key)
        if owner is None or owner.person is None:
            unassigned += 1
            continue
        members = grouped[key]
        best = max(members, key=lambda c: c.quality)
        mismatches += abs(best.ts - event.ts) > 1e-3
        person = (event.camera, owner.person)
        published[person] = published.get(person, 0) + 1
        purities.append(owner.purity)
        tracks.append(PublishedTrack(event.camera, event.track, identities[person], _decode(event.face_jpeg),
                                     event.quality, members))
    never = sorted(set(identities) - set(published))
    assigned = sum(published.values())
    return TrackingResult(len(identities), len(published), never, assigned, unassigned,
                          assigned / max(1, len(published)), float(np.mean([p == 1.0 for p in purities] or [0])),
                          float(np.mean(purities or [0])), sync, mismatches, tracks)


def load_gallery(paths: dict[str, Path]) -> dict[str, np.ndarray]:
    return {name: cv2.imread(str(path), cv2.IMREAD_COLOR) for name, path in paths.items()}


def recogniser(name: str):
    """Embedding function of a recogniser: ``sface`` (ours) or ``dlib`` (independent)."""
    if name == "sface":
        from engines.embedder import Embedder

        return Embedder().embed
    if name == "dlib":
        from trainer.recognizers import DlibRecognizer

        return DlibRecognizer().embed
    raise ValueError(f"unknown recogniser {name!r} (sface, dlib)")


def summary_line(scores: dict[str, Scores], tracking: TrackingResult, name: str) -> str:
    best_rule = max(BASELINES, key=lambda r: scores[r].rank1)
    return (f"rank1_gate={scores['gate'].rank1:.3f} rank1_best_rule={scores[best_rule].rank1:.3f} "
            f"best_rule={best_rule} rank1_oracle={scores['oracle'].rank1:.3f} "
            f"events_per_person={tracking.events_per_person:.2f} purity={tracking.purity:.3f} recogniser={name}")


def describe_run(run: GateRun, tracking: TrackingResult, video_s: float) -> list[str]:
    per_track = len(run.candidates) / max(1, len({(c.camera, c.track) for c in run.candidates}))
    sync = list(tracking.sync_iou.values())
    return [
        f"gate: model {run.model}, motion gating {'on' if run.motion else 'off'}: {run.frames} frames, "
        f"{run.detections} detected, {run.motion_skipped} skipped for lack of motion; {run.scored} faces scored "
        f"({per_track:.1f} per track), {run.dropped} dropped; {run.events} events; {run.wall_s:.0f} s wall, "
        f"{run.cpu_s:.0f} CPU s ({video_s / max(run.wall_s, 1e-9):.1f}× real time)",
        f"tracking: {tracking.events_assigned} end events for {tracking.published_persons} of {tracking.persons} "
        f"people (events_per_person={tracking.events_per_person:.2f}); never published: {len(tracking.never_published)}"
        f"; purity {tracking.purity:.3f} (mean {tracking.mean_purity:.3f}); end events on no person: "
        f"{tracking.events_unassigned}; gate choice ≠ best recorded candidate: {tracking.gate_choice_mismatches}; "
        f"clock sync IoU {min(sync, default=0):.2f}–{max(sync, default=0):.2f}",
    ]


def table(results: dict[str, dict[str, Scores]]) -> list[str]:
    names = list(results)
    header = "| selection | " + " | ".join(f"{n} rank-1 | {n} genuine sim" for n in names) + " |"
    lines = [header, "|---|" + "---|---|" * len(names)]
    labels = {"gate": "gate (SDD-FIQA best shot)", "first": "first eligible", "largest": "largest face",
              "det_score": "highest detector score", "sharpest": "sharpest (Laplacian var.)",
              "area_x_score": "area × detector score", "random": "random (expectation)",
              "oracle": "oracle (highest genuine sim.)"}
    for rule in ("gate", *BASELINES, "oracle"):
        cells = " | ".join(f"{results[n][rule].rank1:.3f} | {results[n][rule].genuine:.3f}" for n in names)
        lines.append(f"| {labels[rule]} | {cells} |")
    return lines


def heldout_default() -> Path | None:
    return next((p for p in HELDOUT_CANDIDATES if p.is_dir()), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", type=Path, default=heldout_default(),
                        help="identity folders of aligned crops nobody trained on (default: Pins held-out)")
    parser.add_argument("--walkbys", type=int, default=120, help="people walking past, over all videos")
    parser.add_argument("--videos", type=int, default=4, help="videos (run as cameras side by side)")
    parser.add_argument("--size", default="1280x720", help="video size WxH")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--motion", choices=("on", "off", "both"), default="both",
                        help="motion-gated detection; both: the full table with it on, and rank-1 with it off")
    parser.add_argument("--recognisers", default="sface,dlib")
    parser.add_argument("--model", default=None, help="quality model (default: current)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="gate setting, e.g. bestshot.score_interval_s=0.2 (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="processes rendering videos")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.identities is None or not args.identities.is_dir():
        parser.error("no identity folder: pass --identities ROOT (ROOT/<person>/<aligned crop>)")
    width, height = (int(v) for v in args.size.lower().split("x"))
    from bench.walkby import VideoSpec, choose_gallery, generate, load_identities
    from bench.walkby.scene import wall_texture
    from engines.paths import cache_root
    from engines.samples import gather_media
    from gate.embedded import EmbeddedRedis

    started = time.monotonic()
    identities = load_identities(args.identities)
    embed = {name: recogniser(name) for name in args.recognisers.split(",")}
    gallery_paths = choose_gallery(identities, embed["sface"] if "sface" in embed else recogniser("sface"))
    texture = wall_texture(str(gather_media(cache_root() / "media", progress=False)["woman_pexels"]))
    per_video = math.ceil(args.walkbys / args.videos)
    specs = [VideoSpec(seed=args.seed * 1000 + i, width=width, height=height, walkbys=per_video)
             for i in range(args.videos)]
    generated = generate(specs, identities, gallery_paths, cache_root() / "bench" / "walkby", texture,
                         jobs=args.jobs, progress=True)
    videos = [path for path, _ in generated]
    truths = {f"walkby{i:02d}": truth for i, (_, truth) in enumerate(generated)}
    video_s = sum(t["frames"] / t["fps"] for t in truths.values())
    gallery = load_gallery(gallery_paths)
    redis_server = EmbeddedRedis()
    lines = [f"walk-bys: {sum(len(t['walkers']) for t in truths.values())} people ({len(identities)} identities, "
             f"{args.identities.name}) in {len(videos)} videos, {width}×{height} 25 fps, {video_s:.0f} s of video; "
             f"gallery: 1 photo per identity, never in a walk"]
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.motion]
    report: dict = {"videos": len(videos), "video_s": video_s, "runs": {}}
    try:
        primary = run_gate(videos, redis_server.url, modes[0], args.model, args.set, progress=True)
        tracking = match_run(primary, truths)
        lines += describe_run(primary, tracking, video_s)
        results = {name: evaluate(tracking.tracks, fn, gallery) for name, fn in embed.items()}
        lines += table(results)
        report["runs"]["primary"] = {
            "motion": primary.motion, "dropped": primary.dropped,
            "tracking": {k: v for k, v in asdict(tracking).items() if k != "tracks"},
            "scores": {n: {r: asdict(s) for r, s in res.items()} for n, res in results.items()}}
        if len(modes) > 1:
            other = run_gate(videos, redis_server.url, modes[1], args.model, args.set, progress=True)
            other_tracking = match_run(other, truths)
            lines += describe_run(other, other_tracking, video_s)
            lost = sorted(set(tracking.never_published) - set(other_tracking.never_published))
            compare = []
            for name, fn in embed.items():
                gate_only = evaluate(other_tracking.tracks, fn, gallery, gate_only=True)["gate"]
                compare.append(f"{name} rank-1 {results[name]['gate'].rank1:.3f} (on) vs {gate_only.rank1:.3f} (off)")
            lines.append(f"motion gating on vs off: {'; '.join(compare)}; never published "
                         f"{len(tracking.never_published)} vs {len(other_tracking.never_published)}; people lost to "
                         f"gating: {len(lost)}" + (f" {lost}" if lost else ""))
            report["runs"]["motion_off"] = {"tracking": {k: v for k, v in asdict(other_tracking).items()
                                                         if k != "tracks"}, "lost_to_gating": lost}
    finally:
        redis_server.stop()
    lines.append(f"benchmark time {time.monotonic() - started:.0f} s")
    order = [n for n in ("dlib", "sface") if n in results] + [n for n in results if n not in ("dlib", "sface")]
    lines += [summary_line(results[name], tracking, name) for name in order]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
