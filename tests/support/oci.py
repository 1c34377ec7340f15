"""Single-layer OCI image archives written from files, for images no registry can give.

The archive is an OCI image layout in a tar, with `io.containerd.image.name` set so
`ctr images import` (and k3s's airgap import) names the image exactly, by its tag and by its
digest: the CRI finds an image that a Pod references by digest (repo@sha256:…) only under
such a name, and the workload policy admits nothing else. Timestamps and owners are zeroed,
so the same files always give the same digests.

`python -m tests.support.oci name-by-digest ARCHIVE` names the images of an archive that
`podman save --format oci-archive` wrote the same way and prints the first one's digest
reference.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _layer(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A tar of `files` (path in the image -> (content, mode)), parent directories included."""
    dirs = sorted({str(p) for path in files for p in Path(path).parents if str(p) != "."})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name in sorted(files):
            content, mode = files[name]
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def write_image(
    out: Path, name: str, files: dict[str, tuple[bytes, int]], entrypoint: list[str], user: str = ""
) -> str:
    """Write the archive for image `name` to `out`; returns the manifest digest."""
    layer = _layer(files)
    config = _canonical(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
            "config": {
                "Entrypoint": entrypoint,
                "Env": ["PATH=/bin:/usr/bin"],
                "WorkingDir": "/",
                "User": user,
            },
        }
    )
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(layer),
                    "size": len(layer),
                }
            ],
        }
    )
    index = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                *_named(
                    {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": _digest(manifest),
                        "size": len(manifest),
                        "platform": {"architecture": "amd64", "os": "linux"},
                    },
                    name,
                )
            ],
        }
    )
    entries = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
    entries += [("blobs/sha256/" + _digest(blob)[7:], blob) for blob in (manifest, config, layer)]
    with tarfile.open(out, "w") as tar:
        for arcname, data in entries:
            info = tarfile.TarInfo(arcname)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return _digest(manifest)


def write_image_once(
    out_dir: Path,
    stem: str,
    repo: str,
    files: dict[str, tuple[bytes, int]],
    entrypoint: list[str],
    user: str,
) -> Path:
    """`out_dir/<stem>.tar`, image `repo` tagged by a hash of all that makes it (paths, modes,
    contents, entrypoint, user) and named by digest; written only when that changed since the
    last write (a `<stem>.tag` stamp says)."""
    recipe = [
        repo,
        entrypoint,
        user,
        sorted(
            (path, mode, hashlib.sha256(content).hexdigest())
            for path, (content, mode) in files.items()
        ),
    ]
    tag = hashlib.sha256(_canonical(recipe)).hexdigest()[:12]
    archive, stamp = out_dir / f"{stem}.tar", out_dir / f"{stem}.tag"
    if archive.exists() and stamp.exists() and stamp.read_text() == tag:
        return archive
    out_dir.mkdir(parents=True, exist_ok=True)
    write_image(archive, f"{repo}:{tag}", files, entrypoint, user)
    name_by_digest(archive)
    stamp.write_text(tag)
    return archive


def repository(name: str) -> str:
    """`name` without its tag or digest (a registry's port is not a tag)."""
    name = name.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def _named(descriptor: dict, name: str) -> list[dict]:
    """The manifest `descriptor` named `name` and repo@digest, once each."""
    annotations = descriptor.get("annotations", {})
    named = [{**descriptor, "annotations": {**annotations, NAME: name}}]
    by_digest = f"{repository(name)}@{descriptor['digest']}"
    if by_digest != name:
        untagged = {k: v for k, v in annotations.items() if k != REF_NAME}
        named.append({**descriptor, "annotations": {**untagged, NAME: by_digest}})
    return named


def name_by_digest(archive: Path) -> str:
    """Name every image of the OCI `archive` also by its digest, in place (a second run
    changes nothing); returns the first image's repo@sha256:… reference."""
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    named: list[dict] = []
    for descriptor in index["manifests"]:
        annotations = descriptor.get("annotations", {})
        name = annotations.get(NAME) or annotations.get(REF_NAME, "")
        if "/" not in name:
            raise ValueError(f"{archive}: manifest {descriptor['digest']} has no full image name")
        if any(d.get("annotations", {}).get(NAME) == name for d in named):
            continue
        named += _named(descriptor, name)
    names = [d["annotations"][NAME] for d in named]
    if names != [d.get("annotations", {}).get(NAME) for d in index["manifests"]]:
        _replace_index(archive, _canonical({**index, "manifests": named}))
    return next(n for n in names if "@" in n)


def _replace_index(archive: Path, index: bytes) -> None:
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(archive) as source, tarfile.open(partial, "w") as target:
        for member in source:
            if member.name == "index.json":
                member.size = len(index)
                target.addfile(member, io.BytesIO(index))
            else:
                target.addfile(member, source.extractfile(member) if member.isfile() else None)
    os.replace(partial, archive)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "name-by-digest":
        sys.exit("usage: python -m tests.support.oci name-by-digest ARCHIVE")
    print(name_by_digest(Path(sys.argv[2])))
