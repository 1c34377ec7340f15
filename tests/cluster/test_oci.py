"""Image archives name their images by digest, the only reference the policy admits."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.support.oci import NAME, REF_NAME, name_by_digest, write_image, write_image_once


def index(archive: Path) -> dict:
    with tarfile.open(archive) as tar:
        return json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]


def names(archive: Path) -> list[str]:
    return [d["annotations"][NAME] for d in index(archive)["manifests"]]


def saved_like_podman(tmp_path: Path, ref_name: str) -> Path:
    """An archive as `podman save --format oci-archive` writes it: the name in ref.name only."""
    archive = tmp_path / "image.tar"
    write_image(archive, "localhost/x:1", {"x": (b"x", 0o644)}, ["/x"])
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    first = index(archive)["manifests"][0]
    first["annotations"] = {REF_NAME: ref_name}
    members["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [first]}).encode()
    with tarfile.open(archive, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def test_written_images_carry_their_tag_and_their_digest(tmp_path: Path) -> None:
    repo = "localhost:5000/team/a"
    digest = write_image(tmp_path / "a.tar", f"{repo}:1.0", {"a": (b"a", 0o755)}, ["/a"])
    assert names(tmp_path / "a.tar") == [f"{repo}:1.0", f"{repo}@{digest}"]


def test_a_saved_archive_is_named_by_digest_once(tmp_path: Path) -> None:
    archive = saved_like_podman(tmp_path, "ghcr.io/devsecops/webapp:sha-0123")
    digest = index(archive)["manifests"][0]["digest"]
    ref = name_by_digest(archive)
    assert ref == f"ghcr.io/devsecops/webapp@{digest}"
    assert names(archive) == ["ghcr.io/devsecops/webapp:sha-0123", ref]
    before = archive.read_bytes()
    assert name_by_digest(archive) == ref
    assert archive.read_bytes() == before
    with tarfile.open(archive) as tar:
        blob = tar.extractfile(f"blobs/sha256/{digest[7:]}")
        assert blob is not None and json.load(blob)["schemaVersion"] == 2


def test_an_image_without_a_full_name_is_refused(tmp_path: Path) -> None:
    archive = saved_like_podman(tmp_path, "sha-0123")
    with pytest.raises(ValueError, match="has no full image name"):
        name_by_digest(archive)


def test_an_image_is_written_again_only_when_its_files_change(tmp_path: Path) -> None:
    files = {"bin/a": (b"a", 0o755)}
    archive = write_image_once(tmp_path / "out", "lab-a", "localhost/a", files, ["/bin/a"], "1:1")
    first = names(archive)
    assert first[0].startswith("localhost/a:") and any("@sha256:" in n for n in first)
    written = archive.stat().st_mtime_ns
    assert (
        write_image_once(tmp_path / "out", "lab-a", "localhost/a", files, ["/bin/a"], "1:1")
        == archive
    )
    assert archive.stat().st_mtime_ns == written
    changed = {"bin/a": (b"b", 0o755)}
    write_image_once(tmp_path / "out", "lab-a", "localhost/a", changed, ["/bin/a"], "1:1")
    assert names(archive)[0] != first[0]
