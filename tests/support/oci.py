"""Single-layer OCI image archives written from files, for images no registry can give.

The archive is an OCI image layout in a tar, with `io.containerd.image.name` set so
`ctr images import` names the image exactly. Timestamps and owners are zeroed, so the
same files always give the same digests.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


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
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
                    },
                }
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
