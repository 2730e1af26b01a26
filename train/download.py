"""Fetch PhysioNet databases into the data root with ``wfdb.dl_database``.

Each database is downloaded into a hidden staging folder next to its destination and moved into
place only when every file has arrived, so an interrupted or failed download never leaves
partial files where the data layer would read them.

``url`` points wfdb at another PhysioNet-shaped server (a mirror, or a local test server): it
must serve ``content/<db>/`` (a page holding ``Version: X``) and ``files/<db>/<X>/...``.
"""

import contextlib
import os
import re
import shutil
import sys
import threading
from pathlib import Path

from ecgedge.device.errors import EcgEdgeError

PHYSIONET_URL = "https://physionet.org/"
_DB_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")

# Databases whose records do not sit at the root of a PhysioNet project of their own name:
# name -> (PhysioNet path of the records, files beside them that are not records). CinC 2017's
# training recordings are the folder training/ of the project challenge-2017, and their labels
# are its REFERENCE.csv (the final, version-3 labels; REFERENCE-original.csv holds the first ones).
SOURCES = {"cinc2017": ("challenge-2017/training", ("REFERENCE.csv",))}


def physionet_url(url=None):
    """Root URL of PhysioNet: ``url``, else ``$ECGEDGE_PHYSIONET_URL``, else physionet.org."""
    url = url or os.environ.get("ECGEDGE_PHYSIONET_URL") or PHYSIONET_URL
    return url if url.endswith("/") else url + "/"


def _once_per_file(dl_pn_file):
    """Wrap wfdb's per-file downloader so that each local file is fetched once.

    ``wfdb.dl_database`` (4.3) lists a record's signal file once per signal, so the ``.dat``
    of a two-lead record such as MIT-BIH's is listed twice, and its two download threads can
    fetch it at the same time: the second sees a partial file and appends to it, leaving a
    file longer than the server's.
    """
    started, lock = set(), threading.Lock()

    def fetch_once(inputs):
        basefile, subdir, _, dl_dir = inputs[:4]
        key = (dl_dir, subdir, basefile)
        with lock:
            if key in started:
                return None
            started.add(key)
        return dl_pn_file(inputs)

    return fetch_once


@contextlib.contextmanager
def _wfdb_pointed_at(url):
    """Point wfdb's index and content URLs at ``url``, and fetch each file once, for the block."""
    from wfdb.io import download

    saved = download.PN_CONTENT_URL, download.config.db_index_url, download.dl_pn_file
    download.PN_CONTENT_URL = url + "content/"
    download.set_db_index_url(url + "files/")
    download.dl_pn_file = _once_per_file(saved[2])
    try:
        yield
    finally:
        download.PN_CONTENT_URL = saved[0]
        download.set_db_index_url(saved[1])
        download.dl_pn_file = saved[2]


def _move_into_place(staging, dest):
    """Move every file of ``staging`` to the same relative path under ``dest``."""
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        target = dest / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)


def download_database(name, data_dir, url=None):
    """Download one PhysioNet database into ``data_dir/name``.

    Parameters
    ----------
    name : database slug, e.g. ``"afdb"``; ``"cinc2017"`` fetches the CinC 2017 training set
        (:data:`SOURCES`).
    data_dir : data root (created if missing).
    url : PhysioNet root URL; default :func:`physionet_url`.

    Returns
    -------
    Path of the database folder, holding every record's files.

    Raises
    ------
    EcgEdgeError : bad name, server unreachable or a file missing; nothing partial is left.
    """
    import wfdb

    if not _DB_NAME.match(name):
        raise EcgEdgeError(f"database names are PhysioNet slugs such as 'afdb', got {name!r}")
    url = physionet_url(url)
    dest = Path(data_dir).expanduser() / name
    staging = Path(data_dir).expanduser() / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        # wfdb prints progress on stdout; keep stdout for the command's own output.
        source, extra = SOURCES.get(name, (name, ()))
        with _wfdb_pointed_at(url), contextlib.redirect_stdout(sys.stderr):
            wfdb.dl_database(source, str(staging))
            if extra:
                project, _, folder = source.partition("/")
                wfdb.dl_files(project, str(staging), [f"{folder}/{f}" if folder else f for f in extra],
                              keep_subdirs=False)
        if not any(staging.rglob("*.hea")):
            raise EcgEdgeError(f"{url} served no WFDB records for {name}; is the name right?")
        _move_into_place(staging, dest)
    except EcgEdgeError:
        raise
    except Exception as exc:  # requests, wfdb and OS errors all mean "download failed"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EcgEdgeError(
            f"could not download {name} from {url}: {detail}; check the network, the database "
            "name, or --url"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def download_databases(names, data_dir, url=None):
    """Download several databases (see :func:`download_database`); returns their folders."""
    return [download_database(name, data_dir, url) for name in names]
